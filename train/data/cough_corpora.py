"""Cough corpora: the covid19-cough set, COUGHVID, Coswara. Group = the recording.

COVID labels are `negative` and `positive` unless a loader is asked for its
corpus's own status names.
"""

from __future__ import annotations

from pathlib import Path

from edgekd_train.data.audio import AUDIO_EXTENSIONS
from edgekd_train.data.clips import Clip
from edgekd_train.data.corpus_base import (
    CorpusError, Skips, describe_contents, read_metadata_csv, read_metadata_json, require_dir,
)

# libsndfile cannot read WebM; COUGHVID ships most of its audio as .webm.
_WEBM_FIX = "convert them first, e.g. `for f in *.webm; do ffmpeg -i $f ${f%.webm}.wav; done`"


def load_covid19_cough(root: str | Path, source: str | None = None, verified_only: bool = False) -> list[Clip]:
    """`metadata.json` (list of {filename, covid19, source, verified, ...}) + `raw/`."""
    expected = "metadata.json (a list of {filename, covid19, source, ...}) and the audio in raw/"
    root = require_dir("covid19_cough", root, expected)
    rows = read_metadata_json("covid19_cough", root, "metadata.json", list, expected)
    skips = Skips("covid19_cough")
    clips = []
    for row in rows:
        if not isinstance(row, dict) or "filename" not in row or not isinstance(row.get("covid19"), bool):
            skips.skip(meta_path, f"entry without filename or boolean covid19: {row!r:.80}")
            continue
        if source is not None and row.get("source") != source:
            continue
        if verified_only and row.get("verified") is not True:
            continue
        path = root / "raw" / row["filename"]
        if not path.is_file():
            skips.skip(path, "listed in metadata.json but missing")
            continue
        label = "positive" if row["covid19"] else "negative"
        meta = {k: row.get(k) for k in ("source", "verified", "asymptomatic", "kind")}
        clips.append(Clip(path, label, path.stem, "covid19_cough", meta))
    skips.summarize()
    if not clips:
        raise CorpusError("covid19_cough", root, "no clip listed in metadata.json was found in raw/", expected)
    return clips


def _find_by_stem(folder: Path, stem: str) -> Path | None:
    for ext in AUDIO_EXTENSIONS:
        p = folder / f"{stem}{ext}"
        if p.is_file():
            return p
    return None


_COUGHVID_STATUS = {"healthy": "healthy", "symptomatic": "symptomatic", "COVID-19": "covid-19"}


def load_coughvid(root: str | Path, label_by: str = "status", min_cough: float = 0.8) -> list[Clip]:
    """COUGHVID: `metadata_compiled.csv` (uuid, cough_detected, status) + `<uuid>.<audio>`.

    `label_by="status"`: healthy / symptomatic / covid-19; `label_by="covid"`:
    negative (healthy) / positive (COVID-19), symptomatic left out. Rows whose
    `cough_detected` is below `min_cough` or whose status is empty are left out.
    """
    if label_by not in ("status", "covid"):
        raise ValueError(f"coughvid label_by={label_by!r}: use 'status' or 'covid'")
    expected = "metadata_compiled.csv (uuid, cough_detected, status) beside <uuid>.wav/.ogg/.flac files"
    root = require_dir("coughvid", root, expected)
    meta_path = root / "metadata_compiled.csv"
    if not meta_path.is_file():
        raise CorpusError("coughvid", root, f"metadata_compiled.csv is missing (it holds {describe_contents(root)})", expected)
    rows = read_metadata_csv("coughvid", root, meta_path, {"uuid", "cough_detected", "status"}, expected)
    skips = Skips("coughvid")
    clips, webm_only = [], 0
    for row in rows:
        status = _COUGHVID_STATUS.get(row["status"].strip())
        try:
            cough = float(row["cough_detected"])
        except ValueError:
            cough = 0.0
        if status is None or cough < min_cough:
            continue
        if label_by == "covid":
            if status == "symptomatic":
                continue
            status = "positive" if status == "covid-19" else "negative"
        path = _find_by_stem(root, row["uuid"])
        if path is None:
            if (root / f"{row['uuid']}.webm").is_file():
                webm_only += 1
            skips.skip(root / row["uuid"], "no decodable audio file (wav/flac/ogg/mp3) for this uuid")
            continue
        meta = {"cough_detected": cough, "status": row["status"], "age": row.get("age"), "gender": row.get("gender")}
        clips.append(Clip(path, status, row["uuid"], "coughvid", meta))
    skips.summarize()
    if not clips:
        problem = "no row has a decodable audio file"
        if webm_only:
            problem += f"; {webm_only} are .webm only, which libsndfile cannot read: {_WEBM_FIX}"
        raise CorpusError("coughvid", root, problem, expected)
    return clips


def load_coswara(root: str | Path, sound: str = "cough-heavy", binary: bool = True) -> list[Clip]:
    """Coswara: `combined_data.csv` (id, covid_status) + `<date>/<id>/<sound>.wav`.

    `binary=True` maps positive_* to positive and healthy to negative and leaves
    the other statuses out; `binary=False` keeps Coswara's status names.
    """
    expected = "combined_data.csv (id, covid_status) and folders <date>/<id>/<sound>.wav (e.g. Extracted_data/)"
    root = require_dir("coswara", root, expected)
    meta_path = root / "combined_data.csv"
    if not meta_path.is_file():
        found = sorted(root.rglob("combined_data.csv"))
        if not found:
            raise CorpusError("coswara", root, f"combined_data.csv is missing (it holds {describe_contents(root)})", expected)
        meta_path = found[0]
    rows = read_metadata_csv("coswara", root, meta_path, {"id", "covid_status"}, expected)
    status_of = {r["id"]: r["covid_status"].strip() for r in rows}
    skips = Skips("coswara")
    clips = []
    for path in sorted(root.rglob(f"{sound}.*")):
        if path.suffix.lower() not in AUDIO_EXTENSIONS:
            continue
        pid = path.parent.name
        status = status_of.get(pid)
        if status is None:
            skips.skip(path, f"participant {pid} is not in {meta_path.name}")
            continue
        label = status
        if binary:
            if status.startswith("positive"):
                label = "positive"
            elif status == "healthy":
                label = "negative"
            else:
                continue
        clips.append(Clip(path, label, pid, "coswara", {"status": status, "sound": sound}))
    skips.summarize()
    if not clips:
        raise CorpusError("coswara", root, f"no {sound}.* file of a listed participant was found", expected)
    return clips
