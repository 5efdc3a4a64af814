"""Word lists and rewrite rules of the leaderboard's English normalisers, as data.

Two eras, selected by :mod:`nemo_neko.eval.normalizer`:

* ``esb2024``: the Open ASR Leaderboard's copy of Whisper's ``EnglishTextNormalizer`` as it
  stood from 2023 to mid 2025 (the ESB-era leaderboard the NeKo paper reports against). It is
  Whisper's normaliser with one extra spelling entry, ``mm -> hmm`` (Whisper removed it in
  January 2023, openai/whisper#659; the leaderboard copy predates that fix).
* ``oal2026``: the current leaderboard normaliser (huggingface/open_asr_leaderboard
  ``normalizer/normalizer.py`` + ``english_abbreviations.py``): more fillers, ``'s -> is`` only
  after pronouns and wh-words, hard-coded compounds, a name-variant map, acronym collapsing and a
  revised spelling list.

Sources: openai/whisper ``whisper/normalizers/english.py`` (MIT, Copyright (c) 2022 OpenAI) and
huggingface/open_asr_leaderboard ``normalizer/`` (Apache-2.0). The rules are reproduced exactly
(they decide the scores); the code that applies them is ours.
"""

from __future__ import annotations

from nemo_neko.eval._spellings import WHISPER_SPELLINGS

WHISPER_FILLERS = ("hmm", "mm", "mhm", "mmm", "uh", "um")
"""Hesitations Whisper's normaliser deletes (whole words)."""

OAL2026_FILLERS = WHISPER_FILLERS + (
    "ah", "aha", "ahh", "ahm", "eh", "ehehe", "em", "hm", "huh", "hum", "mhum", "uhm", "umm",
    "uhuh",
)  # fmt: skip
"""The current leaderboard's longer list."""

# (literal that must occur for the rule to apply, regex, replacement): the literal is only a fast
# pre-check; rules run in this order, as in Whisper.
WHISPER_REPLACERS: tuple[tuple[str, str, str], ...] = (
    # common contractions
    ("won't", r"\bwon't\b", "will not"),
    ("can't", r"\bcan't\b", "can not"),
    ("let's", r"\blet's\b", "let us"),
    ("ain't", r"\bain't\b", "aint"),
    ("y'all", r"\by'all\b", "you all"),
    ("wanna", r"\bwanna\b", "want to"),
    ("gotta", r"\bgotta\b", "got to"),
    ("gonna", r"\bgonna\b", "going to"),
    ("i'ma", r"\bi'ma\b", "i am going to"),
    ("imma", r"\bimma\b", "i am going to"),
    ("woulda", r"\bwoulda\b", "would have"),
    ("coulda", r"\bcoulda\b", "could have"),
    ("shoulda", r"\bshoulda\b", "should have"),
    ("ma'am", r"\bma'am\b", "madam"),
    # abbreviated titles (the trailing space is Whisper's)
    ("mr", r"\bmr\b", "mister "),
    ("mrs", r"\bmrs\b", "missus "),
    ("st", r"\bst\b", "saint "),
    ("dr", r"\bdr\b", "doctor "),
    ("prof", r"\bprof\b", "professor "),
    ("capt", r"\bcapt\b", "captain "),
    ("gov", r"\bgov\b", "governor "),
    ("ald", r"\bald\b", "alderman "),
    ("gen", r"\bgen\b", "general "),
    ("sen", r"\bsen\b", "senator "),
    ("rep", r"\brep\b", "representative "),
    ("pres", r"\bpres\b", "president "),
    ("rev", r"\brev\b", "reverend "),
    ("hon", r"\bhon\b", "honorable "),
    ("asst", r"\basst\b", "assistant "),
    ("assoc", r"\bassoc\b", "associate "),
    ("lt", r"\blt\b", "lieutenant "),
    ("col", r"\bcol\b", "colonel "),
    ("jr", r"\bjr\b", "junior "),
    ("sr", r"\bsr\b", "senior "),
    ("esq", r"\besq\b", "esquire "),
    # perfect tenses
    ("'d been", r"'d been\b", " had been"),
    ("'s been", r"'s been\b", " has been"),
    ("'d gone", r"'d gone\b", " had gone"),
    ("'s gone", r"'s gone\b", " has gone"),
    ("'d done", r"'d done\b", " had done"),
    ("'s got", r"'s got\b", " has got"),
    # general contractions
    ("n't", r"n't\b", " not"),
    ("'re", r"'re\b", " are"),
    ("'s", r"'s\b", " is"),
    ("'d", r"'d\b", " would"),
    ("'ll", r"'ll\b", " will"),
    ("'t", r"'t\b", " not"),
    ("'ve", r"'ve\b", " have"),
    ("'m", r"'m\b", " am"),
)
"""Whisper's contraction and title rules (``esb2024``)."""

OAL2026_REPLACERS = tuple(
    (
        ("'s", r"\b(it|he|she|what|that|who|here|there|how|when|where|why|this)'s\b", r"\1 is")
        if hint == "'s"
        else (hint, pattern, replacement)
    )
    for hint, pattern, replacement in WHISPER_REPLACERS
)
"""The current leaderboard: ``'s -> is`` only after these words (``john's`` stays ``john s``)."""

OAL2026_COMPOUNDS: tuple[tuple[str, str, str], ...] = (
    ("cetera", r"\bet\s+cetera\b", "etc"),
    ("right", r"\bal\s+right\b", "alright"),
    ("right", r"\ball\s+right\b", "alright"),
    ("ever", r"\bhow\s+ever\b", "however"),
    ("fi", r"\bwi\s+fi\b", "wifi"),
    ("fi", r"\bhi\s+fi\b", "hifi"),
    ("fi", r"\blo\s+fi\b", "lofi"),
    ("fi", r"\bsci\s+fi\b", "scifi"),
    ("mail", r"\be\s+mail\b", "email"),
    ("book", r"\be\s+book\b", "ebook"),
    ("commerce", r"\be\s+commerce\b", "ecommerce"),
    ("ray", r"\bx\s+ray\b", "xray"),
    ("shirt", r"\bt\s+shirt\b", "tshirt"),
    ("m", r"\ba\s+m\b", "am"),
    ("m", r"\bp\s+m\b", "pm"),
    ("k", r"\bo\s+k\b", "okay"),
)
"""Multi-word spellings joined after punctuation removal (``oal2026``), same layout as above."""

ESB2024_SPELLINGS: dict[str, str] = {**WHISPER_SPELLINGS, "mm": "hmm"}
"""The leaderboard's 2024 spelling map: Whisper's plus ``mm -> hmm`` (so ``10mm`` -> ``10 hmm``)."""

_OAL2026_SPELLING_REMOVED = (
    "archeological", "cancelation", "cancelations", "flyer / flier", "travelog", "travelogs",
)  # fmt: skip
_OAL2026_SPELLING_SET = {
    # fixed or reversed entries
    "archaeology": "archeology",
    "pummelled": "pummeled",
    "pummelling": "pummeling",
    "snowploughs": "snowplows",
    # new entries
    "ok": "okay",
    "kay": "okay",
    "etcetera": "etc",
    "archaeological": "archeological",
    "cancellation": "cancelation",
    "cancellations": "cancelations",
    "flyer": "flier",
    "mm": "hmm",
    "travelogue": "travelog",
    "travelogues": "travelogs",
}
OAL2026_SPELLINGS: dict[str, str] = {
    **{k: v for k, v in WHISPER_SPELLINGS.items() if k not in _OAL2026_SPELLING_REMOVED},
    **_OAL2026_SPELLING_SET,
}
"""The current leaderboard's spelling map (Whisper's, revised)."""

_NAMES_PACKED = """
alan=allen allan=allen bridgette=bridget charly=charlie charley=charlie garry=gary
gregg=greg jacky=jackie joann=joanne joane=joanne kellye=kelly kelli=kelly kelley=kelly
lilly=lily micheal=michael michele=michelle mollie=molly phillip=philip sallie=sally
stacey=stacy stacie=stacy tracey=tracy tracie=tracy bret=brett carrol=carol carole=carol
carroll=carol allison=alison alyson=alison russel=russell douglass=douglas
dominick=dominic robb=rob kris=chris kristopher=christopher cristopher=christopher
kristina=christina kristen=kristin karl=carl kathy=cathy katherine=catherine
kathryn=catherine catharine=catherine erik=eric erick=eric caren=karen caryn=karen
karin=karen katelyn=caitlin kaitlyn=caitlin kaitlin=caitlin nikole=nicole
veronika=veronica viktor=victor viktoria=victoria kevan=kevin patrik=patrick
frederik=frederick fredrick=frederick lukas=lucas ann=anne jon=john johnathan=jonathan
jonathon=jonathan sara=sarah mathew=matthew nicolas=nicholas rachael=rachel
rebekah=rebecca devorah=deborah theresa=teresa suzanne=susanne antony=anthony
martyn=martin denis=dennis laurence=lawrence tomas=thomas tobey=toby macarthur=mcarthur
macartney=mccartney macarthy=mccarthy maccarthy=mccarthy macdonald=mcdonald mackay=mckay
mackenzie=mckenzie macleod=mcleod maclean=mclean macmillan=mcmillan macintosh=mcintosh
macintyre=mcintyre macnamara=mcnamara macgowan=mcgowan mohamad=mohammed mohamed=mohammed
mohammad=mohammed muhammad=mohammed muhamad=mohammed muhammed=mohammed mouhamed=mohammed
mouhamad=mohammed mahomet=mohammed fatimah=fatima yusuf=yousef yusef=yousef myriam=miriam
rajeev=rajiv alphonso=alfonso bryan=brian geoffrey=jeffrey jeffery=jeffrey geoff=jeff
neal=neil shaun=sean shawn=sean shayne=shane stephen=steven toni=tony leigh=lee
lewis=louis marc=mark meghan=megan nathalie=natalie robyn=robin rodger=roger
linsey=lindsay lindsey=lindsay zackary=zachary zachery=zachary zak=zach sheri=sherry
cheri=sherry sherrie=sherry terri=terry lori=laurie jaime=jamie jayson=jason
lesley=leslie lynda=linda lynne=lynn gayle=gail rhonda=ronda yvonne=ivonne stewart=stuart
walther=walter symon=simon collin=colin dillon=dylan aron=aaron artur=arthur henri=henry
josef=joseph pieter=peter
"""
OAL2026_NAMES: dict[str, str] = dict(item.split("=") for item in _NAMES_PACKED.split())
"""Name spelling variants -> one canonical form (``oal2026``), word by word."""
