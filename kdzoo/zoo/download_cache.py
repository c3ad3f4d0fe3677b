"""``$KERAS_HOME/kdzoo``: published checkpoints downloaded once, converted once, shared.

Any number of processes may load the same model at once (parallel grid points
on one machine, several jobs on one shared home). Each cache entry (one
download, one converted file) has its own lock, ``locks/<entry>.lock``
(:class:`kdzoo.file_lock.FileLock`, blocking): the holder checks the entry,
and only if it is missing or fails its sha256 downloads or converts it into
``.tmp-<entry>-*`` beside it and renames that into place. A process waiting
on the lock then finds the finished entry. Nothing ever writes under a final
name, and a process only deletes what it owns: the entry it holds the lock of
and that entry's temp files, which (every writer holding the lock) can only
be leftovers of a killed writer.
"""

import hashlib
import json
import os
import uuid

import keras

from kdzoo.zoo import registry
from kdzoo.atomic import entry_prefix, remove_stale_temp_files, save_weights, write_text
from kdzoo.zoo.convert.bit_npz import load_bit_npz
from kdzoo.errors import CheckpointError, DownloadError
from kdzoo.file_lock import FileLock


def cache_root():
    """``$KERAS_HOME/kdzoo`` (read at call time, so tests and users can redirect it)."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return os.path.join(home, "kdzoo")


def sha256_of(path, chunk=1 << 20):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def entry_lock(path):
    """The lock of one cache entry (kept apart, so cache folders hold only entries)."""
    name = os.path.basename(path)
    return FileLock(os.path.join(cache_root(), "locks", f"{name}.lock"),
                    what=f"Cache entry {path}", blocking=True)


def _download_target(card):
    """``downloads/<card name>-<url file name>``; both parts must be plain names."""
    name = registry.check_plain_name(card["name"], "Model card name")
    leaf = registry.check_plain_name(os.path.basename(card["url"]),
                                     f"The file name at the end of the url of card {name!r}:")
    return os.path.join(cache_root(), "downloads", f"{name}-{leaf}")


def _record_path(target):
    return target + ".first_download.json"


def _record_first_download(target, card):
    """Trust on first use: a card without a sha256 gets the first download's digest and
    size recorded beside it, and every later use is checked against that record."""
    record = {"sha256": sha256_of(target), "size_bytes": os.path.getsize(target),
              "url": card["url"]}
    write_text(_record_path(target), json.dumps(record, sort_keys=True) + "\n", ".json",
               prefix=entry_prefix(_record_path(target)))


def _check_first_download(target, card):
    """A cached download of a card without sha256 against its first-download record."""
    record_path = _record_path(target)
    try:
        with open(record_path, encoding="utf-8") as f:
            record = json.load(f)
        expected, size = str(record["sha256"]), int(record["size_bytes"])
    except FileNotFoundError:  # cached before kdzoo kept records: trust it now, once
        return _record_first_download(target, card)
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as e:
        raise DownloadError(f"The first-download record {record_path} is unreadable "
                            f"({type(e).__name__}): delete it and {target} to download "
                            "the file afresh.") from None
    got_size = os.path.getsize(target)
    if got_size != size or sha256_of(target) != expected:
        raise DownloadError(
            f"{target} changed since it was first downloaded for {card['name']!r}: its "
            f"record {record_path} says sha256 {expected} and {size:,} bytes (it now has "
            f"{got_size:,} bytes). kdzoo did not use it. If you did not change it, it was "
            "altered or damaged: delete both files and load again to download it afresh.")
    return None


def discard_download(card):
    target = _download_target(card)
    with entry_lock(target):
        for path in (target, _record_path(target)):
            if os.path.exists(path):
                os.remove(path)


def download(card):
    """The published file of ``card`` (fetched by keras.utils.get_file if not cached)."""
    url, expected = card["url"], card["sha256"]
    target = _download_target(card)
    directory = os.path.dirname(target)
    # get_file silently falls back to /tmp/.keras when $KERAS_HOME does not exist yet.
    os.makedirs(directory, exist_ok=True)
    with entry_lock(target):
        remove_stale_temp_files(target)
        remove_stale_temp_files(_record_path(target))
        if os.path.exists(target):
            if not expected:
                _check_first_download(target, card)
                return target
            if sha256_of(target) == expected:
                return target
            os.remove(target)  # altered or incomplete: never kept, fetched again
        # A fresh name each time: get_file trusts any file already under its fname.
        tmp_name = f"{entry_prefix(target)}{uuid.uuid4().hex}"
        tmp = os.path.join(directory, tmp_name)
        try:
            keras.utils.get_file(fname=tmp_name, origin=url, cache_subdir=".",
                                 cache_dir=directory)
            got = sha256_of(tmp)
            if expected and got != expected:
                raise DownloadError(
                    f"The file downloaded from {url} for {card['name']!r} does not match "
                    f"the sha256 {expected} of its model card ({card.get('card_file')}): "
                    f"it has {got}, so it was deleted and not stored as {target}. It is "
                    "incomplete or altered: try again, or download it elsewhere, check "
                    "it with `sha256sum`, and pass weights='/path/to/"
                    f"{os.path.basename(url)}' to kdzoo.load.")
            os.replace(tmp, target)
            if not expected:
                _record_first_download(target, card)
        except DownloadError:
            raise
        except Exception as e:  # network errors come as bare Exception from get_file
            raise DownloadError(
                f"Could not fetch {url} for {card['name']!r} ({e}). Without network access, "
                f"download that file elsewhere and either pass weights='/path/to/"
                f"{os.path.basename(url)}' to kdzoo.load, or copy it to {target}.") from e
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    return target


def converted_is_intact(path):
    """True if ``path`` still has the sha256 recorded beside it when it was converted."""
    try:
        with open(path + ".sha256", encoding="utf-8") as f:
            expected = f.read().strip()
    except OSError:  # no record: the conversion never finished
        return False
    return os.path.exists(path) and sha256_of(path) == expected


def pretrained_path(card, build_full):
    """Local Keras weights for ``card``: shipped with kdzoo, or converted and cached."""
    if card["format"] == "keras_weights":
        path = os.path.join(registry.CARDS_DIR,
                            registry.check_plain_name(card["file"], "The weight file of a card"))
        if not os.path.exists(path):
            raise CheckpointError(f"Weight file {path} of {card['name']!r} is missing; "
                                  "reinstall kdzoo.")
        if card["sha256"] and sha256_of(path) != card["sha256"]:
            raise CheckpointError(f"Weight file {path} does not match the sha256 in its model "
                                  f"card ({card['card_file']}); it is corrupt or was replaced. "
                                  "Reinstall kdzoo to restore it.")
        return path
    if card["format"] != "bit_npz":
        raise CheckpointError(f"Model card {card['name']!r} has unknown format {card['format']!r}.")
    name = registry.check_plain_name(card["name"], "Model card name")
    converted = os.path.join(cache_root(), "converted", f"{name}.weights.h5")
    with entry_lock(converted):  # the download's lock is always taken inside this one
        for leftover in (converted, converted + ".sha256"):
            remove_stale_temp_files(leftover)
        if converted_is_intact(converted):
            return converted
        for stale in (converted, converted + ".sha256"):  # truncated or corrupt: rebuild
            if os.path.exists(stale):
                os.remove(stale)
        npz_path = download(card)
        try:
            model = build_full()
            load_bit_npz(model, npz_path)
        except CheckpointError as e:
            discard_download(card)  # the cache never keeps a file we could not use
            raise CheckpointError(f"{e} kdzoo deleted it from its download cache; the next "
                                  "kdzoo.load downloads it afresh.") from e
        save_weights(model, converted, prefix=entry_prefix(converted))
        write_text(converted + ".sha256", sha256_of(converted) + "\n", ".sha256",
                   prefix=entry_prefix(converted + ".sha256"))
    return converted
