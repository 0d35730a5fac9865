"""Vocabulary and sentence templates of the word-learning task's child-directed grammar.

The words follow the MacArthur-Bates CDI (Words and Sentences) categories. A lexicon entry is a
category, the POS tags its words carry, whether its frequency ranks are shuffled per seed (content
words: which noun is frequent should not be tied to the noun itself) and its words, most frequent
first. A word may sit in several entries and so carry several tags ("her": DET and OBJ).

Tags (a template slot names one): NOUN (any common noun) and its CDI subsets ANIMAL FOOD TOY
BODY HOUSE CLOTHES VEHICLE PERSON (not all are slots yet), PLACE, NAME, SOUND, ADJ, DET, PREP,
GREET, SUBJ (subjects of a base verb: i you we they), SUBJ_PL (subjects of "are"), SUBJ3 (he she
it), OBJ, and the verb forms VT / VT3 (transitive: base, 3rd person singular) and VI / VI3 / VI_ING
(intransitive: base, 3rd person, -ing).
Words that only ever appear as fixed words of a template carry tags no template uses as a slot
(AUX, WH, VERB, PART, CONJ, INTJ, ADP, QUANT, PUNCT).
"""

from __future__ import annotations

# (category, tags, shuffled ranks?, words most frequent first)
LEXICON: tuple[tuple[str, tuple[str, ...], bool, str], ...] = (
    ("animals", ("NOUN", "ANIMAL"), True, "dog cat duck bird fish cow horse pig sheep bunny bear lion monkey"
     " frog mouse owl bee butterfly elephant giraffe tiger puppy kitty turtle chicken"),
    ("food", ("NOUN", "FOOD"), True, "milk juice cookie apple banana cheese bread egg cake cereal carrot grape"
     " orange pizza soup water yogurt cracker toast pear peach candy sandwich chicken"),
    ("toys", ("NOUN", "TOY"), True, "ball book doll block balloon puzzle crayon bubble kite drum teddy toy"),
    ("vehicles", ("NOUN", "VEHICLE"), True, "car truck train bus boat plane bike tractor"),
    ("body parts", ("NOUN", "BODY"), True, "nose eye ear mouth hand foot tooth tummy head hair finger toe knee arm"),
    ("household", ("NOUN", "HOUSE"), True, "cup spoon bowl plate bottle blanket pillow bed chair table door"
     " window lamp box towel soap brush key phone clock"),
    ("clothing", ("NOUN", "CLOTHES"), True, "shoe sock hat coat shirt boot diaper jacket dress mitten"),
    ("people", ("NOUN", "PERSON"), True, "baby boy girl man lady friend teacher doctor"),
    ("places", ("PLACE",), True, "park garden store beach zoo farm pool"),
    ("names", ("NAME",), True, "mommy daddy grandma grandpa emma sam lily max mia ben"),
    ("sounds", ("SOUND",), True, "moo woof meow quack baa oink"),
    ("descriptive", ("ADJ",), True, "big little red blue green yellow orange hot cold wet dirty clean soft"
     " happy sad hungry sleepy nice pretty yummy yucky new fast good"),
    ("determiners", ("DET",), False, "the my your this that his her our"),
    ("subjects", ("SUBJ",), False, "i you we they"),
    ("subjects", ("SUBJ_PL",), False, "you we they"),
    ("subjects", ("SUBJ3",), False, "it he she"),
    ("objects", ("OBJ",), False, "it me you them him her us"),
    ("prepositions", ("PREP",), False, "on in with under behind near"),
    ("greetings", ("GREET",), False, "hi bye hello"),
    ("auxiliaries", ("AUX",), False, "is do can are am does"),
    ("question words", ("WH",), False, "where what"),
    ("template verbs", ("VERB",), False, "look put say says"),
    ("template words", ("PART",), False, "to let's"),
    ("template words", ("CONJ",), False, "and"),
    ("template words", ("INTJ",), False, "please"),
    ("template words", ("ADP",), False, "at"),
    ("template words", ("QUANT",), False, "more"),
    ("punctuation", ("PUNCT",), False, ". ? !"),
)  # fmt: skip

# Action words. Transitive ones take an object and come as (base, 3rd person singular); intransitive ones
# also have an -ing form for the progressive ("mommy is sleeping ."). A verb may be both (eat, read, draw).
TRANSITIVE: tuple[tuple[str, str], ...] = (
    ("eat", "eats"), ("want", "wants"), ("see", "sees"), ("like", "likes"), ("love", "loves"), ("throw", "throws"),
    ("kick", "kicks"), ("push", "pushes"), ("hug", "hugs"), ("kiss", "kisses"), ("find", "finds"), ("read", "reads"),
    ("open", "opens"), ("hold", "holds"), ("catch", "catches"), ("drop", "drops"), ("drink", "drinks"),
    ("wash", "washes"), ("feed", "feeds"), ("touch", "touches"), ("draw", "draws"), ("fix", "fixes"),
    ("bite", "bites"), ("brush", "brushes"),
)  # fmt: skip
INTRANSITIVE: tuple[tuple[str, str, str], ...] = (
    ("play", "plays", "playing"), ("sleep", "sleeps", "sleeping"), ("run", "runs", "running"),
    ("jump", "jumps", "jumping"), ("sit", "sits", "sitting"), ("walk", "walks", "walking"),
    ("swim", "swims", "swimming"), ("cry", "cries", "crying"), ("dance", "dances", "dancing"),
    ("sing", "sings", "singing"), ("fall", "falls", "falling"), ("laugh", "laughs", "laughing"),
    ("eat", "eats", "eating"), ("read", "reads", "reading"), ("draw", "draws", "drawing"),
    ("go", "goes", "going"), ("hide", "hides", "hiding"), ("wait", "waits", "waiting"),
)  # fmt: skip

# Sentence patterns: an UPPERCASE item is a slot filled by a word with that tag, anything else is that very word.
TEMPLATES: tuple[str, ...] = (
    "DET NOUN VI3 .",
    "DET ADJ NOUN VI3 .",
    "DET NOUN VT3 DET NOUN .",
    "DET NOUN VI3 PREP DET NOUN .",
    "DET NOUN is ADJ .",
    "DET NOUN is VI_ING .",
    "NAME VT3 DET NOUN .",
    "NAME is VI_ING .",
    "NAME and NAME VI .",
    "SUBJ VT DET NOUN .",
    "SUBJ VT OBJ .",
    "SUBJ VI PREP DET NOUN .",
    "SUBJ3 VT3 DET NOUN .",
    "SUBJ3 is VI_ING .",
    "SUBJ3 VI3 .",
    "NAME VT3 OBJ .",
    "DET NOUN VT3 OBJ .",
    "can you VI ?",
    "SUBJ_PL are VI_ING .",
    "i am VI_ING .",
    "look at the NOUN !",
    "look at the ADJ NOUN !",
    "do you want DET NOUN ?",
    "do you want to VT DET NOUN ?",
    "do you want to VI ?",
    "can you VT DET NOUN ?",
    "where is DET NOUN ?",
    "what does the ANIMAL say ?",
    "the ANIMAL says SOUND .",
    "let's VT DET NOUN !",
    "let's VI !",
    "let's go to the PLACE !",
    "more FOOD please .",
    "put on your CLOTHES .",
    "wash your BODY .",
    "GREET NAME !",
    # The longest patterns: by default held out of train and used for the unseen split.
    "DET ADJ NOUN VT3 DET ADJ NOUN PREP DET NOUN .",
    "look at the ADJ NOUN PREP DET ADJ NOUN !",
    "do you want to VT DET ADJ NOUN PREP DET NOUN ?",
    "NAME and NAME are VI_ING PREP DET ADJ NOUN PREP DET NOUN .",
)
