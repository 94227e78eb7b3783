"""Parser version 2 of the Shakespeare corpus: one spelling per character, one speaker per speech.

The Gutenberg texts name speakers three ways: in capitals (``AGAMEMNON``), abbreviated
(``Ham.``, ``Glou.``, ``FAL.``) and in title case (``Romeo``). Version 2 maps every label to
the capitalised word of the play's own list of persons (``PERSONS REPRESENTED`` /
``DRAMATIS PERSONAE``) that it abbreviates, so ``Ham`` becomes ``HAMLET`` and ``FAL``
``FALSTAFF``; a label that abbreviates no single word of that list is only capitalised.

89 speeches also run on into the next speaker's line, printed as one paragraph
``PETRUCHIO. Whose tongue?`` (or a bare ``PERICLES.`` before an aside, or ``Mar. and Ber.``
answering together); version 2 splits them there. Each refined speech remembers the
version-1 speech it came from, which keeps the train/validation split (a hash of the version-1
position) the demo model was trained with.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .shakespeare import Speech

_PERSONAE = re.compile(r"^\s*(DRAMATIS PERSONAE|PERSONS REPRESENTED)\.?\s*$", re.IGNORECASE)
_WORD = re.compile(r"[A-Za-z][A-Za-z']*")
_TURN = re.compile(r"^([A-Z][A-Za-z'\-]*(?: [A-Z][A-Za-z'\-]*){0,3})\.(?:\s+(.*))?$")
# Labels the persons list cannot resolve: another spelling (Gloucester / Gloster), an
# ambiguous prefix (Lear's Cor. is Cordelia, Corn. Cornwall), roles of the play within a play.
_SPELLINGS = {
    "lear": {"GLOU": "GLOSTER", "COR": "CORDELIA", "DOCT": "DOCTOR", "OFF": "OFFICER"},
    "hamlet": {"PRO": "PROLOGUE", "LUC": "LUCIANUS", "P": "PLAYER"},
}
_ORDINAL = {"I": "FIRST", "II": "SECOND", "III": "THIRD", "1": "FIRST", "2": "SECOND"}
_PLURAL = re.compile(r"(ER|OR|ANT|ENT)S$")  # Players, Messengers, Servants to Cornwall


def personae_words(lines: list[str]) -> set[str]:
    """Capitalised words of the persons list (the lines before the first act), 's dropped."""
    start = next((i for i, line in enumerate(lines) if _PERSONAE.match(line)), None)
    if start is None:
        return set()
    words: set[str] = set()
    for line in lines[start + 1 :]:
        if re.match(r"^\s*(ACT|Act)\s", line):
            break
        for w in _WORD.findall(line):
            if w[0].isupper():
                words.add(re.sub(r"'S$", "", w.upper()))
    return words


def _expand(word: str, vocabulary: set[str], spellings: dict[str, str]) -> str:
    if word in spellings:
        return spellings[word]
    if word in vocabulary or len(word) < 3:
        return word
    stems = {v for v in vocabulary if v.startswith(word) and v not in (word + "S", word + "ES")}
    return _PLURAL.sub(r"\1", stems.pop()) if len(stems) == 1 else word


def canonical(label: str, vocabulary: set[str], play: str = "") -> str:
    """A speaker label as the play's persons list spells it: ``'Ham'`` -> ``'HAMLET'``,
    ``'I Play'`` -> ``'FIRST PLAYER'``; labels that abbreviate nothing are capitalised."""
    spellings = _SPELLINGS.get(play, {})
    tokens = label.split()
    out = []
    for k, token in enumerate(tokens):
        up = token.upper()
        if k == 0 and len(tokens) > 1 and up in _ORDINAL:
            out.append(_ORDINAL[up])
            continue
        core = up.rstrip(".")
        full = _expand(core, vocabulary, spellings)
        out.append(full if full != core else up)
    return " ".join(out)


@dataclass(frozen=True)
class Turn:
    speaker: str
    first_line: str


_BRACED = re.compile(r"\{[^\]\}\n]*\]")  # "{Aside.]": a direction misprinted with a brace
_JOINT = re.compile(r"^and ([A-Z][A-Za-z']*)\.?$")  # "Mar. and Ber." speak together


def _turn(
    line: str, labels: set[str], speakers: set[str], canon: Callable[[str], str]
) -> Turn | None:
    """``'PETRUCHIO. Whose tongue?'`` -> Turn('PETRUCHIO', 'Whose tongue?') if he speaks in
    the play. A capitalised name is a turn; a title-case one only where the play labels its
    speakers that way (elsewhere ``Helen. An she were...`` is a sentence ending in a name)."""
    m = _TURN.match(line)
    if not m or not (m.group(1).isupper() or m.group(1) in labels):
        return None
    name, rest = canon(m.group(1)), m.group(2) or ""
    joint = _JOINT.match(rest)
    if joint and canon(joint.group(1)) in speakers:
        return Turn(f"{name} AND {canon(joint.group(1))}", "")
    return Turn(name, rest) if name in speakers else None


def refine_play(speeches: list[Speech], header: list[str]) -> list[tuple[int | None, Speech]]:
    """One play's speeches as version 2, each with the index of the version-1 speech it came
    from (counting the speeches not marked ``new``; None for a new one). ``header``: the
    play's text lines (persons list)."""
    vocabulary = personae_words(header)
    play = speeches[0].play if speeches else ""

    def canon(label: str) -> str:
        return canonical(label, vocabulary, play)

    labels = {s.speaker for s in speeches if not s.speaker.isupper()}
    speakers = {canon(s.speaker) for s in speeches}
    out: list[tuple[int | None, Speech]] = []
    old = -1
    for s in speeches:
        old += not s.new
        origin = None if s.new else old
        current, lines = canon(s.speaker), list[str]()
        for line in _BRACED.sub("", s.text).split("\n"):
            if not line.strip():
                continue
            turn = _turn(line, labels, speakers, canon) if lines else None
            if turn is None:
                lines.append(line)
                continue
            out.append((origin, replace(s, speaker=current, text="\n".join(lines))))
            current, lines = turn.speaker, [turn.first_line] if turn.first_line else []
        if lines:
            out.append((origin, replace(s, speaker=current, text="\n".join(lines))))
    return out
