"""A real, in-memory git object store: blobs, trees and commits with git's own SHA-1 object ids.

An object's id is sha1(b"<type> <size>\\0" + body), its body exactly what git writes: a tree is
"<mode> <name>\\0<20-byte id>" per entry, sorted the way git sorts them (a subtree as if its name
ended in "/"); a commit is "tree …\\nparent …\\nauthor …\\ncommitter …\\n\\n<message>". So an id the
stand-in answers is the one `git hash-object` / `git mktree` / `git commit-tree` would give.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
BLOB_MODES = frozenset({"100644", "100755", "120000"})
TREE_MODE = "040000"  # as the REST API writes it; git's tree body says "40000"
COMMIT_MODE = "160000"


def object_id(kind: str, body: bytes) -> str:
    """git's object id of a `kind` ("blob", "tree", "commit") object with this body."""
    header = f"{kind} {len(body)}\0".encode()
    return hashlib.sha1(header + body, usedforsecurity=False).hexdigest()


@dataclass(frozen=True)
class Entry:
    """One tree entry: mode as the REST API writes it (040000 for a subtree)."""

    mode: str
    name: str
    sha: str

    @property
    def kind(self) -> str:
        if self.mode == TREE_MODE:
            return "tree"
        return "commit" if self.mode == COMMIT_MODE else "blob"


@dataclass(frozen=True)
class Person:
    name: str
    email: str
    epoch: int
    offset: str = "+0000"

    def line(self) -> str:
        return f"{self.name} <{self.email}> {self.epoch} {self.offset}"


@dataclass(frozen=True)
class GitCommit:
    sha: str
    tree: str
    parents: tuple[str, ...]
    author: Person
    committer: Person
    message: str


def _sort_key(entry: Entry) -> bytes:
    name = entry.name.encode()
    return name + b"/" if entry.mode == TREE_MODE else name


def tree_body(entries: list[Entry]) -> bytes:
    out = b""
    for e in sorted(entries, key=_sort_key):
        mode = "40000" if e.mode == TREE_MODE else e.mode
        out += f"{mode} {e.name}\0".encode() + bytes.fromhex(e.sha)
    return out


def commit_body(
    tree: str, parents: tuple[str, ...], author: Person, committer: Person, message: str
) -> bytes:
    lines = [f"tree {tree}", *(f"parent {p}" for p in parents)]
    lines += [f"author {author.line()}", f"committer {committer.line()}"]
    return ("\n".join(lines) + "\n\n" + message).encode()


class GitStore:
    """One repository's objects by id (not thread-safe: the stand-in's lock guards it)."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self.trees: dict[str, tuple[Entry, ...]] = {EMPTY_TREE: ()}
        self.commits: dict[str, GitCommit] = {}

    def put_blob(self, data: bytes) -> str:
        sha = object_id("blob", data)
        self.blobs[sha] = data
        return sha

    def put_tree(self, entries: list[Entry]) -> str:
        names = [e.name for e in entries]
        if len(set(names)) != len(names) or any(not n or "/" in n for n in names):
            raise ValueError(f"bad tree entry names: {names}")
        ordered = tuple(sorted(entries, key=_sort_key))
        sha = object_id("tree", tree_body(list(ordered)))
        self.trees[sha] = ordered
        return sha

    def put_commit(
        self,
        tree: str,
        parents: tuple[str, ...],
        author: Person,
        committer: Person,
        message: str,
    ) -> str:
        sha = object_id("commit", commit_body(tree, parents, author, committer, message))
        self.commits[sha] = GitCommit(sha, tree, parents, author, committer, message)
        return sha

    def lookup(self, tree: str, path: str) -> Entry | None:
        """The entry at a slash-separated path below `tree`, or None."""
        parts = [p for p in path.strip("/").split("/") if p]
        current: Entry | None = Entry(TREE_MODE, "", tree)
        for part in parts:
            if current is None or current.mode != TREE_MODE:
                return None
            current = next((e for e in self.trees[current.sha] if e.name == part), None)
        return current

    def with_path(self, tree: str | None, path: str, entry: Entry | None) -> str:
        """The id of `tree` with `entry` (its name ignored) put at `path`, or removed for None;
        intermediate trees are created, and emptied ones dropped, the way git does."""
        head, _, rest = path.strip("/").partition("/")
        entries = {e.name: e for e in self.trees[tree or EMPTY_TREE]}
        if rest:
            below = entries.get(head)
            sub = below.sha if below is not None and below.mode == TREE_MODE else None
            new_sub = self.with_path(sub, rest, entry)
            if new_sub == EMPTY_TREE:
                entries.pop(head, None)
            else:
                entries[head] = Entry(TREE_MODE, head, new_sub)
        elif entry is None:
            entries.pop(head, None)
        else:
            entries[head] = Entry(entry.mode, head, entry.sha)
        return self.put_tree(list(entries.values()))

    def walk(self, tree: str, prefix: str = "") -> Iterator[tuple[str, Entry]]:
        """(path, entry) of every entry below `tree`, subtrees before their contents."""
        for e in self.trees[tree]:
            path = f"{prefix}{e.name}"
            yield path, e
            if e.mode == TREE_MODE:
                yield from self.walk(e.sha, f"{path}/")

    def files(self, tree: str) -> Mapping[str, bytes]:
        return {p: self.blobs[e.sha] for p, e in self.walk(tree) if e.mode in BLOB_MODES}
