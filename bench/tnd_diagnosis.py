"""What E3's demonstrations carried, and which words each arm learned: a diagnosis of a kept E3 run.

Reads the run directory of `python -m bench.tnd_mini --out DIR` (nothing is trained) and measures

* the demonstrations every TnD-family student received (its store's Demonstrate lessons): how many,
  their mean length in words, how often they say a test word the students' own corpus lacks, and
  how often one of the banned words (which the banned-word teacher's demonstrations then lack);
* the test words each arm learned (an nAoA@0.5 in `word-reports/`), by how often the word occurs in
  the students' own corpus: missing (0), rare (1-3) or common (more), per seed.

    python -m bench.tnd_diagnosis DIR        # DIR: a full run's --out directory
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from bench.common import finish, markdown_table
from bench.goals import Goal, goals_json
from bench.tnd_mini import ARMS, OWN_CORPUS, banned_words
from node.rpc.agora.v1 import lesson_pb2
from node.tasks.word_learning import WordLearningTask
from student.tnd import OWN_CORPUS_SEED

BANDS = ("missing", "rare", "common")  # how often a test word occurs in the students' own corpus


def band(count: int) -> str:
    return "missing" if count == 0 else "rare" if count <= 3 else "common"


def demonstrations(store: Path) -> list[str]:
    """The continuations of every Demonstrate lesson a student's store holds."""
    with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT lesson FROM received_lessons WHERE kind = 'demonstrations'").fetchall()
    lessons = [lesson_pb2.Lesson.FromString(blob) for (blob,) in rows]
    return [d.continuation for lesson in lessons for d in lesson.demonstrations.demonstrations]


def run(out: Path) -> dict[str, Any]:
    task = WordLearningTask()
    own = Counter(w for s in task.sentences(OWN_CORPUS, seed=OWN_CORPUS_SEED) for w in s.split())
    bands = {w: band(own[w]) for w in task.test_words()}
    missing = {w for w, b in bands.items() if b == "missing"}
    banned = set(banned_words(task))
    names = sorted(p.name for p in (out / "word-reports").iterdir())
    learned: dict[str, dict[str, list[int]]] = {arm: {b: [] for b in BANDS} for arm in ARMS}
    demos: dict[str, dict[str, float]] = {}
    for name in names:
        arm = name.rsplit("-", 1)[0].replace("-", "_")
        words = json.loads((out / "word-reports" / name / "word_metrics.json").read_text())["words"]
        for b in BANDS:
            learned[arm][b].append(sum(w["naoa"] is not None and bands[w["word"]] == b for w in words))
        texts = demonstrations(out / "nodes" / name / "agora.db")
        if texts:
            spoken = Counter(word for text in texts for word in text.split())
            demos[name] = {
                "demonstrations": len(texts),
                "words": sum(spoken.values()),
                "mean_words": sum(spoken.values()) / len(texts),
                "missing_word_mentions": sum(spoken[w] for w in missing),
                "missing_words_said": sum(spoken[w] > 0 for w in missing),
                "banned_word_mentions": sum(spoken[w] for w in banned),
            }
    result = {
        "run": str(out),
        "bands": {b: sum(v == b for v in bands.values()) for b in BANDS},
        "own_corpus_mean_words": sum(own.values()) / OWN_CORPUS,
        "learned": learned,
        "demonstrations": demos,
    }
    mean_words = statistics.fmean(d["mean_words"] for d in demos.values()) if demos else None
    goal = Goal("demonstration_mean_words", mean_words, "recorded (a diagnosis, no target)", mean_words is not None)
    return {**result, "goals": goals_json([goal])}


def table(result: dict[str, Any]) -> str:
    counts = result["bands"]
    header = ["arm", *(f"{b} words learned (of {counts[b]}), per seed" for b in BANDS)]
    rows = [[arm, *(", ".join(map(str, by[b])) for b in BANDS)] for arm, by in result["learned"].items()]
    demo_header = ["student", "demonstrations", "words", "words each", "missing-word mentions", "missing said"]
    demo_header.append("banned-word mentions")
    keys = ["demonstrations", "words", "mean_words", "missing_word_mentions", "missing_words_said"]
    keys.append("banned_word_mentions")
    demo_rows = [
        [name, *(f"{d[k]:.1f}" if k == "mean_words" else d[k] for k in keys)]
        for name, d in result["demonstrations"].items()
    ]
    return markdown_table(header, rows) + "\n\n" + markdown_table(demo_header, demo_rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tnd_diagnosis", description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="the --out directory of a bench.tnd_mini run")
    args = parser.parse_args(argv)
    if not (args.run / "word-reports").is_dir():
        parser.error(f"{args.run} holds no word-reports/: pass the --out directory of a finished bench.tnd_mini run")
    return finish("tnd_diagnosis", run(args.run), table)


if __name__ == "__main__":
    sys.exit(main())
