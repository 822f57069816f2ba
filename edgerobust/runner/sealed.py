"""A bundle is sealed: every path it names is a plain relative name inside it, and nothing in it is a link.

This is the one seal rule: the runner checks bundles with it on the device, before reading anything but
manifest.json, and the host's checker (edgerobust/export/seal.py) is this same code, so both refuse the same bundles
with the same words. The rule: the bundle directory itself is not a symbolic link; its tree holds only directories
and regular files with one name each (no symbolic link, hard link, FIFO, socket or device file, anywhere); manifest.json
is one of those files; and every manifest field declared a path (by key, at any depth: `PATH_KEYS`, `PATH_SUFFIXES`,
`PATH_TABLES`) is a plain relative name of a file of that tree, or of a directory for a directory key
(`is_directory_key`). Walks use lstat, so no link is ever followed and no FIFO opened.
"""
import hashlib
import json
import os
import stat

from .errors import RunnerError

MANIFEST_NAME = "manifest.json"
BUNDLE_FORMAT = "edgerobust-bundle-1"
# A string (or list of strings) under one of these keys, at any depth, names a file (or, for a directory key, a
# directory) in the bundle, so a section added later (replay sets, the runner) is checked without a new rule.
PATH_KEYS = frozenset(["file", "files", "path", "paths", "dir", "directory", "runner", "entry", "script", "inputs",
                       "outputs", "labels", "masks", "engine", "calibration"])
PATH_SUFFIXES = ("_file", "_files", "_path", "_paths", "_dir")
DIRECTORY_KEYS = frozenset(["dir", "directory", "runner"])
DIRECTORY_SUFFIXES = ("_dir",)
PATH_TABLES = frozenset(["files"])  # a mapping under this key has paths as its keys (the file table)
CHUNK = 1 << 20


def is_path_key(key):
    return key in PATH_KEYS or str(key).endswith(PATH_SUFFIXES)


def is_directory_key(key):
    """A path under this key may name a directory; under every other path key it must name a regular file."""
    return key in DIRECTORY_KEYS or str(key).endswith(DIRECTORY_SUFFIXES)


def check_name(name, what):
    """`name` must be a plain relative '/'-separated name: not absolute, no '', '.', '..', backslash or NUL."""
    if not isinstance(name, str):
        raise RunnerError("unsafe_path", "{} must be a file name, not {} ({!r})".format(what, type(name).__name__,
                                                                                         name))
    problem = None
    if not name:
        problem = "is empty"
    elif "\x00" in name:
        problem = "contains a NUL byte"
    elif name.startswith(("/", "~")) or (len(name) > 1 and name[1] == ":"):
        problem = "is an absolute path; a bundle names its files relative to itself"
    elif "\\" in name:
        problem = "contains a backslash; use '/' between directories"
    else:
        parts = name.split("/")
        if ".." in parts:
            problem = "climbs out of the bundle ('..')"
        elif "" in parts or "." in parts:
            problem = "is not a plain relative name (empty or '.' component)"
    if problem:
        raise RunnerError("unsafe_path", "{} {!r} {}".format(what, name, problem))
    return name


def kind_of(mode):
    """What a non-regular, non-directory file is, in words."""
    for test, name in ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a regular file or directory"


def _refuse_file(path, info, name, what):
    """A link or special file, or a regular file with more than one name (a hard link), is refused."""
    if stat.S_ISREG(info.st_mode):
        if info.st_nlink > 1:
            raise RunnerError("unsafe_path", "{}: {} is a hard link ({} names); a bundle holds files with one name "
                                             "each (copy it without links)".format(what, name, info.st_nlink))
        return
    target = " (to a directory)" if stat.S_ISLNK(info.st_mode) and os.path.isdir(path) else ""
    raise RunnerError("unsafe_path", "{}: {} is {}{}; a bundle holds only regular files and directories "
                                     "(re-export it)".format(what, name, kind_of(info.st_mode), target))


def check_root(bundle, what=None):
    """The bundle directory exists, is a directory and is not itself a symbolic link."""
    what = what or "bundle {}".format(bundle)
    try:
        info = os.lstat(bundle)
    except (OSError, ValueError):
        raise RunnerError("bundle_missing", "{} does not exist; export it (`edgerobust export`) or copy it "
                                            "again".format(what)) from None
    if stat.S_ISLNK(info.st_mode):
        raise RunnerError("unsafe_path", "{} is a symbolic link; pass the directory itself".format(what))
    if not stat.S_ISDIR(info.st_mode):
        raise RunnerError("bundle_missing", "{} is not a directory".format(what))


def walk_tree(bundle, what=None):
    """Every regular file under `bundle` as a sorted relative name; any link, hard link or special file is refused."""
    what = what or "bundle {}".format(bundle)
    names = []
    stack = [""]
    while stack:
        rel = stack.pop()
        directory = os.path.join(bundle, rel) if rel else bundle
        try:
            entries = sorted(os.listdir(directory))
        except OSError as exc:
            raise RunnerError("io_error", "cannot list {}: {}".format(directory, exc.strerror)) from None
        for entry in entries:
            child = rel + "/" + entry if rel else entry
            path = os.path.join(directory, entry)
            info = os.lstat(path)
            if stat.S_ISDIR(info.st_mode):
                stack.append(child)
            else:
                _refuse_file(path, info, child, what)
                names.append(child)
    return sorted(names)


def resolve(bundle, name, what, directory=False):
    """The on-disk path of `name` after checking that every component is a real directory / regular file."""
    check_name(name, what)
    path = bundle
    parts = name.split("/")
    for i, part in enumerate(parts):
        path = os.path.join(path, part)
        try:
            info = os.lstat(path)
        except OSError:
            raise RunnerError("bundle_modified", "{}: {} is missing from the bundle; re-export the bundle or copy it "
                                                 "again".format(what, name)) from None
        last = i == len(parts) - 1
        if not last and not stat.S_ISDIR(info.st_mode):
            kind = "a symbolic link" if stat.S_ISLNK(info.st_mode) else "not a directory"
            raise RunnerError("unsafe_path", "{}: {} passes through {}, which is {}".format(
                what, name, "/".join(parts[:i + 1]), kind))
        if last and stat.S_ISDIR(info.st_mode) and not directory:
            raise RunnerError("unsafe_path", "{} {!r} is a directory, not a file; re-export the bundle".format(
                what, name))
        if last and not stat.S_ISDIR(info.st_mode):
            _refuse_file(path, info, name, what)
    real_bundle = os.path.realpath(bundle)
    if os.path.commonpath([real_bundle, os.path.realpath(path)]) != real_bundle:  # a second lock after the walk
        raise RunnerError("unsafe_path", "{}: {} resolves outside the bundle".format(what, name))
    return path


def declared_paths(manifest):
    """(where, key, value) for every manifest field declared a path; `where` is a location like models.fp32.file.

    Strings (or lists of strings) under a path key are paths; numbers, booleans and null there are counts or absent
    entries and are skipped; a mapping is walked by its own keys, except a file table (`files`), whose keys are the
    paths.
    """
    found = []

    def walk(node, key, where):
        if isinstance(node, dict):
            for child, value in node.items():
                here = "{}.{}".format(where, child) if where else str(child)
                if key in PATH_TABLES:
                    found.append(("{}[{!r}]".format(where, child), key, child))
                walk(value, str(child), here)
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, key, "{}[{}]".format(where, i))
        elif is_path_key(key) and node is not None and not isinstance(node, (bool, int, float)):
            found.append((where, key, node))

    walk(manifest, "", "")
    return found


def read_manifest(bundle, what):
    """manifest.json's bytes and parsed JSON (called only once the tree is known to be clean)."""
    path = os.path.join(bundle, MANIFEST_NAME)
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
        return raw, json.loads(raw.decode("utf-8"))
    except (OSError, ValueError) as exc:
        raise RunnerError("bundle_invalid", "{}: {} is not valid JSON ({}); re-export the bundle".format(
            what, MANIFEST_NAME, type(exc).__name__)) from None
    except RecursionError:
        raise RunnerError("bundle_invalid", "{}: {} is nested too deeply to be a bundle manifest; re-export the "
                                            "bundle".format(what, MANIFEST_NAME)) from None


def seal(bundle, shown=None):
    """The one seal check, host and device: (manifest, manifest bytes, regular files) or a RunnerError.

    `shown` is how messages name the bundle (default: its path). Nothing but manifest.json is read, and that only
    once the tree is clean.
    """
    what = "bundle {}".format(bundle if shown is None else shown)
    check_root(bundle, what)
    files = walk_tree(bundle, what)
    if MANIFEST_NAME not in files:
        raise RunnerError("bundle_missing", "{} is not a bundle (no {}); create it with `edgerobust export`".format(
            what, MANIFEST_NAME))
    raw, manifest = read_manifest(bundle, what)
    if not isinstance(manifest, dict):
        raise RunnerError("bundle_invalid", "{}: {} is not an edgerobust bundle manifest".format(what, MANIFEST_NAME))
    try:
        for where, key, value in declared_paths(manifest):
            resolve(bundle, check_name(value, "{}: {}".format(what, where)), "{}: {}".format(what, where),
                    is_directory_key(key))
    except RecursionError:
        raise RunnerError("bundle_invalid", "{}: {} is nested too deeply to be a bundle manifest; re-export the "
                                            "bundle".format(what, MANIFEST_NAME)) from None
    return manifest, raw, files


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


class Bundle:
    """An opened, sealed bundle: its manifest, its sha256 (of manifest.json) and checked paths."""

    def __init__(self, directory, manifest, sha256):
        self.directory = directory
        self.manifest = manifest
        self.sha256 = sha256

    def path(self, name, what="manifest"):
        return resolve(self.directory, name, what)

    def model_entry(self, precision):
        models = self.manifest.get("models") or {}
        entry = models.get(precision)
        if not isinstance(entry, dict) or "file" not in entry:
            have = ", ".join(sorted(models)) or "none"
            raise RunnerError("precision_unavailable", "the bundle has no {} model (it has: {}); export with that "
                                                       "precision for this target".format(precision, have))
        return entry

    def artifact(self, precision):
        entry = self.model_entry(precision)
        listed = self.manifest["files"].get(entry["file"], {})
        return {"bundle_sha256": self.sha256, "file": entry["file"], "sha256": entry.get("sha256") or
                listed.get("sha256"), "precision": precision, "target": self.manifest.get("target")}


def open_bundle(directory):
    """Seal the bundle (`seal`: root, tree, manifest, every named path) before anything else is read, and open it."""
    if directory is None:
        raise RunnerError("bundle_missing", "no bundle directory given; copy the bundle to the device first")
    directory = os.path.abspath(directory)
    manifest, raw, _ = seal(directory)
    if manifest.get("format") != BUNDLE_FORMAT or not isinstance(manifest.get("files"), dict):
        raise RunnerError("bundle_invalid", "{} is not an edgerobust bundle manifest (format {})".format(
            os.path.join(directory, MANIFEST_NAME), BUNDLE_FORMAT))
    return Bundle(directory, manifest, hashlib.sha256(raw).hexdigest())


def check_hashes(bundle):
    """Every listed file has its sha256 and size, and no unlisted file exists; returns the number of files."""
    expected = bundle.manifest["files"]
    for name in sorted(expected):
        entry = expected[name]
        path = bundle.path(name, "files")
        if "bytes" in entry and os.path.getsize(path) != entry["bytes"]:
            raise RunnerError("bundle_modified", "{} has been modified (size differs from the manifest); copy the "
                                                 "bundle again or re-export it".format(name))
        if sha256_file(path) != entry.get("sha256"):
            raise RunnerError("bundle_modified", "{} has been modified (sha256 differs from the manifest); copy the "
                                                 "bundle again or re-export it".format(name))
    extra = [name for name in walk_tree(bundle.directory) if name != MANIFEST_NAME and name not in expected]
    if extra:
        raise RunnerError("bundle_modified", "{} is not listed in the manifest; remove it or re-export the "
                                             "bundle".format(extra[0]))
    return len(expected)
