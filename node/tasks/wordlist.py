"""A built-in list of common lowercase English words for the word-sorting task (no download needed).

Every word is a-z only, 2 to 9 letters, and unique. The list is clustered on purpose: many words share
a first letter, a 2-3 letter prefix, or are a prefix of another word ("car" / "card" / "cart"), so that
sorted lists need TriPosT's nested "sort this subpart" steps and the runs-out-of-letters rule.
"""

from __future__ import annotations

_TEXT = """
able about above act add after again age air all also an and animal answer ant any apple arm army art as ask
at away
baby back bad bag ball band bank bar barn bat battle be beach bean bear beat bed bee before begin bell belt
best better boat body boil bone book boot both bottle bottom bow box boy brain branch brave bread break brick
bridge bring brother brown
can candle candy cane cap cape captain car card care carry cart cat catch coat code coffee coin cold color
comb come cook cool copy corn corner cost cotton count cover cow
dance dark day deep dog door draw dream dress drink drive drop dry duck
each ear earth eat egg end even every eye
face fact fair fall false family fan far farm fast fat father flag flame flat float floor flow flower fly
glass go goal goat gold good grade grain grand grass great green group grow
hair hall hammer hand handle happy hard hat have head health hear heart help hen her here
ice idea in inch ink inside into iron is it jam jar jazz jet job join joke joy judge jump
keep key kick kind king kitchen kite knee knife know lab lake lamp land large last late
machine main make man map mark market master match matter mean meat meet men model money moon most mother
mouse mouth move name near neck need nest net new next night no nose note now number nut
ocean of off oil old on one only open order other out over
pack page paint pair pan paper park part party pass past path pear pen person pet pick pie piece pig pin pine
pipe pit place plan plane plant play please quack queen quick quit quiz
road rock roll room root rose round row
safe save sea seat see sell send shape share sheep shell ship shoe shop short stack staff stage stair stamp
stand star start state station stay steam steel step stick still stone stop store storm story
than thank that the then there thick thin thing think this thread three throw thumb track trade train trap
travel tray treat tree trend trick trip truck true trust truth uncle under until up upper use
valley value van very vote wait walk want war warm wash watch water way xylophone
yard year yellow yes yet you young youth zebra zero zigzag zone zoo
"""

WORDS: tuple[str, ...] = tuple(_TEXT.split())
