"""One split directory of the cache being written: its manifest, damage checks and repair,
staleness against the data set, and the shards appended to it (used by :mod:`cache.build`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from cache.kinds import CacheKind, kind_of_config
from cache.store import (
    FORMAT_VERSION,
    MANIFEST,
    CacheConfigMismatch,
    CacheError,
    check_config,
    package_versions,
    read_manifest,
    shard_name,
    to_json_value,
    write_json,
    write_shard,
)
from neural.common import sha256_file
from pipelines.pipeline import Skip


class SplitWriter:
    """The manifest of one split directory and the shards appended to it.

    Opening it checks what ``cache verify`` would call damage: an unreadable
    manifest, shards missing or changed since they were written (sha256),
    entries pointing at no listed shard or listed twice. With ``repair`` the
    damaged parts are dropped here (their samples are then computed again),
    otherwise :class:`CacheError` names the first one, before anything is
    written. A cache built with another config is refused, or with
    ``replace_mismatched`` started afresh.
    """

    def __init__(self, directory: Path, split: str, cfg, identity: dict, repair: bool = True,
                 replace_mismatched: bool = False, hint: str | None = None, log=print):
        self.directory = directory
        self.split = split
        self.kind: CacheKind = kind_of_config(cfg)
        self.cfg = cfg
        self.log = log
        self.hashes: dict[str, str] = {}  # sha256 of every source file looked at in this build
        self.n_repaired = 0
        manifest = None
        if (directory / MANIFEST).is_file():
            try:
                manifest = read_manifest(directory)
            except CacheError as exc:
                if not repair:
                    raise CacheError(f"{exc}; {hint or 'rebuild it'}") from None
                log(f"{directory}: {exc}; rebuilding this split")
                self._remove_files()
                self.n_repaired += 1
        if manifest is not None:
            try:
                check_config(manifest, cfg, identity, directory, hint)
            except CacheConfigMismatch:
                if not replace_mismatched:
                    raise
                log(f"{directory}: built with another pipeline config; rebuilding this split")
                self._remove_files()
                manifest = None
        self.manifest = manifest or {
            "format": FORMAT_VERSION,
            "kind": self.kind.name,
            "split": split,
            "config": cfg.to_dict(),
            "identity": identity,
            "versions": package_versions(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "complete": False,
            "shards": [],
            "samples": [],
            "skipped": [],
        }
        self.entries: dict[str, dict] = {e["id"]: e for e in self.manifest["samples"]}
        self.skips: dict[str, str] = {s["id"]: s["reason"] for s in self.manifest["skipped"]}
        damage = self._damage()
        if damage and not repair:
            where, why = damage[0]
            more = f" (and {len(damage) - 1} more)" if len(damage) > 1 else ""
            raise CacheError(f"{directory}/{where}: {why}{more}; {hint or 'run `emologic cache build` to repair it'}")
        if damage:
            self._drop(damage)
        for stale in directory.glob(".*.tmp"):  # left by a crash in the middle of a write
            stale.unlink()
        listed = {s["name"] for s in self.manifest["shards"]}
        for orphan in directory.glob("shard-*.safetensors"):  # written, never listed: an interrupted Ray build's
            if orphan.name not in listed:
                orphan.unlink()

    def _remove_files(self) -> None:
        for path in [self.directory / MANIFEST, *self.directory.glob("shard-*.safetensors")]:
            path.unlink(missing_ok=True)

    def _damage(self) -> list[tuple[str, str]]:
        """``(shard name or sample id, what is wrong)`` for every damaged part (see the class doc)."""
        out = []
        listed = {s["name"] for s in self.manifest["shards"]}
        for info in self.manifest["shards"]:
            path = self.directory / info["name"]
            if not path.is_file():
                out.append((info["name"], "shard listed in the manifest is missing"))
            elif sha256_file(path) != info["sha256"]:
                out.append((info["name"], "shard changed after it was written (sha256 differs)"))
        seen = set()
        for e in self.manifest["samples"]:
            if e["shard"] not in listed:
                out.append((e["id"], f"its shard {e['shard']!r} is not listed in the manifest"))
            elif e["id"] in seen:
                out.append((e["id"], "listed twice in the manifest"))
            seen.add(e["id"])
        return out

    def _drop(self, damage: list[tuple[str, str]]) -> None:
        """Forget the damaged shards and entries (their samples are computed again)."""
        bad = {where for where, _ in damage}
        self.manifest["shards"] = [s for s in self.manifest["shards"] if s["name"] not in bad]
        listed = {s["name"] for s in self.manifest["shards"]}
        # an id listed twice cannot be trusted in either place: both entries go
        self.entries = {e["id"]: e for e in self.manifest["samples"] if e["shard"] in listed and e["id"] not in bad}
        self.log(f"{self.directory}: repairing {len(damage)} damaged part(s): "
                 + "; ".join(f"{w}: {why}" for w, why in damage[:3]) + (" ..." if len(damage) > 3 else ""))
        self.n_repaired += len(damage)
        self.write_manifest()
        for name in bad:
            if name.startswith("shard-"):
                (self.directory / name).unlink(missing_ok=True)

    def finished(self, sample) -> tuple[bool, str | None]:
        """``(finished, why not)``: cached with the current content of its source file and
        the data set's current label and annotations; else why not: ``"changed"`` (the
        file) or ``"relabelled"`` (label or annotations); ``None`` for a new sample."""
        entry = self.entries.get(str(sample.sample_id))
        if entry is None:
            return False, None
        path = self.kind.source_path(sample)
        if not path.is_file():  # the file is gone; its cached tensors stay valid
            return True, None
        digest = self.hashes[str(sample.sample_id)] = sha256_file(path)
        if digest != entry["sha256"]:
            return False, "changed"
        label = None if sample.label is None else int(sample.label)
        # the label sits in the shard too (labels tensor), so a relabelled sample is computed again
        if entry.get("label") != label or entry.get("annotations") != to_json_value(sample.annotations):
            return False, "relabelled"
        if entry.get(self.kind.source_key) != str(path):  # same bytes, moved: point at where it is now
            entry[self.kind.source_key] = str(path)
        return True, None

    def prune(self, keep: set[str]) -> int:
        """Forget entries and skips of samples that are not (any more) in ``keep``: the data
        set moved them to another split or dropped them. Returns how many went."""
        gone = [i for i in self.entries if i not in keep]
        for i in gone:
            del self.entries[i]
        stale_skips = [i for i in self.skips if i not in keep]
        for i in stale_skips:
            del self.skips[i]
        return len(gone)

    def drop_unreferenced_shards(self) -> None:
        """Shards none of whose rows are listed any more (pruned or recomputed) are deleted."""
        used = {e["shard"] for e in self.entries.values()}
        unused = [s["name"] for s in self.manifest["shards"] if s["name"] not in used]
        if unused:
            self.manifest["shards"] = [s for s in self.manifest["shards"] if s["name"] in used]
            self.write_manifest()
            for name in unused:
                (self.directory / name).unlink(missing_ok=True)

    def new_shard_names(self, n: int) -> list[str]:
        """``n`` names of new shards: never the name of a listed shard (a repair or clean-up
        leaves gaps in the numbering); a Ray build names all its chunks' shards up front."""
        taken = {s["name"] for s in self.manifest["shards"]}
        names, i = [], len(taken)
        while len(names) < n:
            if shard_name(i) not in taken:
                names.append(shard_name(i))
            i += 1
        return names

    def commit(self, items: list, skips: list[Skip]) -> str | None:
        """Write ``items`` (processed samples) as a new shard, then the manifest that lists it."""
        return self.record(write_items_shard(self.directory, self.new_shard_names(1)[0], items, self.kind, self.cfg),
                           skips)

    def record(self, written: "WrittenShard | None", skips: list[Skip]) -> str | None:
        """List a shard written by :func:`write_items_shard` (here or by a Ray worker) and ``skips``
        in the manifest, then write the manifest."""
        name = None
        if written is not None:
            name = written.record["name"]
            self.manifest["shards"].append(written.record)
            for entry in written.entries:
                self.entries[entry["id"]] = entry
                self.hashes[entry["id"]] = entry["sha256"]
                self.skips.pop(entry["id"], None)
        for s in skips:
            self.skips[s.sample_id] = s.reason
            self.entries.pop(s.sample_id, None)  # its file changed and is now unusable
        self.write_manifest()
        return name

    def write_manifest(self, complete: bool | None = None) -> None:
        if complete is not None:
            self.manifest["complete"] = complete
        self.manifest["samples"] = list(self.entries.values())
        self.manifest["skipped"] = [{"id": k, "reason": v} for k, v in self.skips.items()]
        self.manifest["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        write_json(self.directory / MANIFEST, self.manifest)


@dataclass
class WrittenShard:
    """A shard file on disk and what the manifest says about it (its record and sample entries)."""

    record: dict  # {"name", "sha256", "n_samples", "bytes"}
    entries: list[dict]  # per sample: id, sha256, kind fields, label, annotations, shard, row


def write_items_shard(directory: Path, name: str, items: list, kind: CacheKind, cfg) -> WrittenShard | None:
    """Write processed samples as shard ``name`` (atomically); ``None`` when there are none.

    Pure in its inputs, so a Ray worker can call it: only the writer of the
    manifest (the build's driver, holding the cache's lock) decides whether the shard is listed.
    """
    if not items:
        return None
    digest = write_shard(directory / name, kind.shard_tensors(items, cfg), [p.sample_id for p in items])
    record = {"name": name, "sha256": digest, "n_samples": len(items), "bytes": (directory / name).stat().st_size}
    entries = [
        {
            "id": p.sample_id,
            "sha256": p.sha256,
            **kind.manifest_entry(p),
            "label": p.label,
            "annotations": to_json_value(p.annotations),
            "shard": name,
            "row": row,
        }
        for row, p in enumerate(items)
    ]
    return WrittenShard(record, entries)
