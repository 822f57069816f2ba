"""A bundle is sealed: every path it names is a plain relative name inside it, and nothing in it is a link.

The runner checks this itself, before reading anything but manifest.json, and does not trust the host's check
(issue "A bundle is sealed"). Walks use lstat, so no link is ever followed.
"""
import hashlib
import json
import os
import stat

from .errors import RunnerError

MANIFEST_NAME = "manifest.json"
BUNDLE_FORMAT = "edgerobust-bundle-1"
# A string (or list of strings) under one of these keys, at any depth, names a file (or, for DIRECTORY_KEYS, a
# directory) in the bundle. The same declaration as the host's checker, so both refuse the same manifests.
PATH_KEYS = frozenset(["file", "files", "path", "paths", "dir", "directory", "runner", "entry", "script", "inputs",
                       "outputs", "labels", "masks", "engine", "calibration"])
PATH_SUFFIXES = ("_file", "_files", "_path", "_paths", "_dir")
DIRECTORY_KEYS = frozenset(["dir", "directory", "runner"])
PATH_TABLES = frozenset(["files"])  # a mapping under this key has paths as its keys (the file table)
CHUNK = 1 << 20


def check_name(name, what):
    """`name` must be a plain relative '/'-separated name: not absolute, no '', '.', '..', backslash or NUL."""
    if not isinstance(name, str) or not name:
        raise RunnerError("unsafe_path", "{}: {!r} is not a file name; re-export the bundle".format(what, name))
    bad = None
    if name.startswith(("/", "~")) or (len(name) > 1 and name[1] == ":"):
        bad = "is an absolute path"
    elif "\\" in name or "\x00" in name:
        bad = "contains a backslash or NUL"
    elif any(part in ("", ".", "..") for part in name.split("/")):
        bad = "has an empty, '.' or '..' component"
    if bad:
        raise RunnerError("unsafe_path", "{}: {!r} {}; a bundle names only files inside itself".format(what, name, bad))
    return name


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
            raise RunnerError("bundle_modified", "{}: {} is missing from the bundle; copy the bundle again".format(
                what, name)) from None
        last = i == len(parts) - 1
        if stat.S_ISLNK(info.st_mode):
            raise RunnerError("unsafe_path", "{}: {} is a symbolic link ({}); a bundle holds regular files only".format(
                what, name, "/".join(parts[:i + 1])))
        if not last and not stat.S_ISDIR(info.st_mode):
            raise RunnerError("unsafe_path", "{}: {} passes through {}, which is not a directory".format(
                what, name, "/".join(parts[:i + 1])))
        if last and not (directory and stat.S_ISDIR(info.st_mode)):
            _check_regular(info, name, what)
    real_bundle = os.path.realpath(bundle)
    if os.path.commonpath([real_bundle, os.path.realpath(path)]) != real_bundle:
        raise RunnerError("unsafe_path", "{}: {} resolves outside the bundle".format(what, name))
    return path


def _check_regular(info, name, what):
    if not stat.S_ISREG(info.st_mode):
        raise RunnerError("unsafe_path", "{}: {} is not a regular file (a directory, device, FIFO or socket)".format(
            what, name))
    if info.st_nlink > 1:
        raise RunnerError("unsafe_path", "{}: {} is a hard link ({} names); copy the bundle without links".format(
            what, name, info.st_nlink))


def walk_tree(bundle):
    """Every regular file under `bundle` as a relative name; any link or special file is refused."""
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
            info = os.lstat(os.path.join(directory, entry))
            if stat.S_ISDIR(info.st_mode):
                stack.append(child)
            elif stat.S_ISLNK(info.st_mode):
                raise RunnerError("unsafe_path", "bundle tree: {} is a symbolic link; a bundle holds regular files "
                                                 "only (copy it without links)".format(child))
            else:
                _check_regular(info, child, "bundle tree")
                names.append(child)
    return sorted(names)


def is_path_key(key):
    return key in PATH_KEYS or str(key).endswith(PATH_SUFFIXES)


def manifest_names(manifest):
    """(name, where, may_be_directory) for every manifest field declared a path (PATH_KEYS, at any depth).

    Strings (or lists of strings) under a path key are paths; numbers, booleans and null there are skipped; a mapping
    is walked by its own keys, except a file table (`files`), whose keys are the paths.
    """
    found = []

    def walk(node, key, where):
        if isinstance(node, dict):
            for child, value in node.items():
                here = "{}.{}".format(where, child) if where else str(child)
                if key in PATH_TABLES:
                    found.append((child, "{}[{!r}]".format(where, child), False))
                walk(value, str(child), here)
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, key, "{}[{}]".format(where, i))
        elif is_path_key(key) and node is not None and not isinstance(node, (bool, int, float)):
            found.append((node, where, key in DIRECTORY_KEYS))

    walk(manifest, "", "")
    return found


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
    """Read manifest.json and seal the bundle (tree + every named path), before anything else is read."""
    if directory is None or not os.path.isdir(directory):
        raise RunnerError("bundle_missing", "bundle directory {} does not exist; copy the bundle to the device "
                                            "first".format(directory))
    directory = os.path.abspath(directory)
    manifest_path = os.path.join(directory, MANIFEST_NAME)
    try:
        info = os.lstat(manifest_path)
    except OSError:
        raise RunnerError("bundle_missing", "{} is not a bundle (no {})".format(directory, MANIFEST_NAME)) from None
    if stat.S_ISLNK(info.st_mode):
        raise RunnerError("unsafe_path", "{} is a symbolic link; a bundle holds regular files only".format(
            MANIFEST_NAME))
    _check_regular(info, MANIFEST_NAME, "bundle")
    try:
        with open(manifest_path, "rb") as handle:
            raw = handle.read()
        manifest = json.loads(raw.decode("utf-8"))
    except (OSError, ValueError) as exc:
        raise RunnerError("bundle_invalid", "{} cannot be read as JSON ({})".format(manifest_path, exc)) from None
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT or \
            not isinstance(manifest.get("files"), dict):
        raise RunnerError("bundle_invalid", "{} is not an edgerobust bundle manifest (format {})".format(
            manifest_path, BUNDLE_FORMAT))
    walk_tree(directory)
    for name, where, may_be_directory in manifest_names(manifest):
        resolve(directory, name, "manifest " + where, may_be_directory)
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
