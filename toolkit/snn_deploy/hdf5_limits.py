"""A structural check of HDF5 files we did not write, made before any of their data is read
(the input boundary of every stage that reads HDF5).

Every reader of a NIR graph, Deployment or netx file (and of the NIR copy inside a Deployment, and
the sniffing that tells them apart) calls ``check_declared_sizes`` first. It walks every link from
the metadata alone (link types, dataset creation properties, declared shapes; no dataset is read)
and refuses, with one line naming the object:

- links to other files (external links, user-defined links) and soft links that lead out of the
  file, nowhere or round in a loop: ``nir.read`` follows every link by name;
- datasets whose bytes live outside the file: external storage (``external=[(path, offset,
  size)]``: HDF5 reads the bytes from that local path, /etc/shadow or a FIFO alike) and virtual
  datasets (HDF5 opens their source files, as soon as their shape is asked for when unlimited);
- groups nested deeper than ``MAX_GROUP_DEPTH`` and files with more than ``MAX_LINKS`` links
  (every path counted: a reader walking by name visits a group once per path to it);
- datasets claiming more elements or bytes than any network we can run needs: chunked storage
  lets a few kilobytes of file claim 10**9 neurons, and reading it would allocate hundreds of GB;
- objects with more than ``MAX_ATTRIBUTES`` attributes, or an attribute claiming more than
  ``MAX_ATTRIBUTE_ELEMENTS`` elements or ``MAX_ATTRIBUTE_BYTES`` bytes.

Dataset types are left to the readers, which know what they expect (``convert.nirgraph`` refuses
non-numeric NIR parameters). Soft links are followed here one link at a time, never through HDF5's
own traversal, so that the check itself never leaves the file.
"""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path
from typing import NoReturn

import h5py
from h5py import h5a, h5d, h5g, h5l, h5o, h5t

from snn_deploy.errors import InputFileError
from snn_deploy.fileio import regular_input

# No network this toolkit can run (Loihi 2: 120M synapses per chip, Intel product brief; a few
# chips) needs a single array near this; 2**28 elements = 1 GiB at float32.
MAX_DATASET_ELEMENTS = 1 << 28
MAX_TOTAL_ELEMENTS = 1 << 29
# Bytes too: a compound, array or fixed-length string type makes one element as large as it likes.
# float64 at the element limits.
MAX_DATASET_BYTES = 8 * MAX_DATASET_ELEMENTS
MAX_TOTAL_BYTES = 8 * MAX_TOTAL_ELEMENTS
# A NIR graph nested convert.lowering.MAX_NESTING (32) levels deep keeps its deepest parameters
# at depth 2 * 32 + 6 (/node/nodes/<name>/nodes/<name>/.../metadata/<dict>/<value>); Deployments
# and netx files are at most 4 deep. Walking is recursive: this also bounds the recursion.
MAX_GROUP_DEPTH = 80
# Links walked, every path counted: 16 per node for convert.lowering.MAX_NODES (4096) NIR nodes.
MAX_LINKS = 1 << 16
# Soft links followed in a row: HDF5's own default limit (H5L_NUM_LINKS in H5Lpublic.h).
MAX_SOFT_HOPS = 16
# Attributes: ours are scalars and short strings (a Deployment's profile TOML, a few KB). They are
# stored uncompressed in the file, but the elements of a variable-length one may all point at one
# large heap object: so their number and declared size are bounded too.
MAX_ATTRIBUTES = 256
MAX_ATTRIBUTE_ELEMENTS = 1 << 16
MAX_ATTRIBUTE_BYTES = 1 << 24
# Variable-length values (strings) sit in the file's heap, each element read whole: our attributes
# hold one; datasets hold node types and a graph's edges (two per edge).
MAX_ATTRIBUTE_VLEN_ELEMENTS = 16
MAX_VLEN_ELEMENTS = 1 << 16
# Longest object name or link value quoted in a message.
SHOWN_CHARS = 100


def _show(raw: bytes | str) -> str:
    """A name from the file as one short printable line (names may hold newlines or any byte)."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    if not text.isprintable():
        text = ascii(text)[1:-1]
    return text if len(text) <= SHOWN_CHARS else "..." + text[-(SHOWN_CHARS - 3):]


@dataclasses.dataclass(frozen=True)
class _Subtree:
    """What one group holds, all paths counted; its height is its deepest group below it."""

    links: int
    elements: int
    nbytes: int
    height: int
    vlen: int = 0


@dataclasses.dataclass
class _Walk:
    """What the walk has counted so far in one file; groups walked once are not walked again
    (a file that links one group from many places is counted, not re-read)."""

    origin: str
    links: int = 0
    elements: int = 0
    nbytes: int = 0
    vlen: int = 0
    walked: dict[tuple[int, int], _Subtree] = dataclasses.field(default_factory=dict)

    def refuse(self, what: str) -> NoReturn:
        raise InputFileError(f"{self.origin}: {what}: refused unread")

    def count_links(self, n: int = 1) -> None:
        self.links += n
        if self.links > MAX_LINKS:
            self.refuse(f"more than {MAX_LINKS:,} links (counted along every path)")


def check_declared_sizes(source: str | Path | io.BytesIO, *, origin: str) -> None:
    """Raise InputFileError when an HDF5 file would make its reader leave the file, run without
    end or allocate without bound (the module docstring lists what is refused).

    A path must be a regular file (a FIFO or device is refused before it is opened). Files h5py
    cannot open are left to the caller's own reader (which names them as unreadable).
    """
    if not isinstance(source, io.BytesIO):
        source = regular_input(source, what="HDF5 file")
    try:
        f = h5py.File(source, "r")
    except (OSError, ValueError):
        return
    walk = _Walk(origin)
    with f:
        try:
            root = h5o.open(f.id, b"/")
            _check_attributes(root, "/", walk)
            _walk_group(root, "", depth=0, ancestors=frozenset({_identity(root)}), walk=walk)
        except (RuntimeError, OSError, KeyError, ValueError, TypeError) as exc:
            raise InputFileError(f"{origin} is damaged: {type(exc).__name__} while listing its"
                                 " contents") from None
    if walk.elements > MAX_TOTAL_ELEMENTS:
        walk.refuse(f"its datasets claim {walk.elements:,} elements together (limit"
                    f" {MAX_TOTAL_ELEMENTS:,})")
    if walk.nbytes > MAX_TOTAL_BYTES:
        walk.refuse(f"its datasets claim {walk.nbytes:,} bytes together (limit {MAX_TOTAL_BYTES:,})")


def open_checked(path: str | Path, *, what: str, unreadable: str) -> h5py.File:
    """An HDF5 file we did not write, opened for reading: a regular file (``fileio.regular_input``:
    "WHAT not found: PATH" when missing), its structure checked (``check_declared_sizes``), then
    opened; ``unreadable`` is the one-line error for a file h5py cannot open."""
    path = regular_input(path, what=what)
    check_declared_sizes(path, origin=str(path))
    try:
        return h5py.File(path, "r")
    except OSError:
        raise InputFileError(unreadable) from None


def _identity(obj: h5o.ObjectID) -> tuple[int, int]:
    info = h5o.get_info(obj)
    return int(info.fileno), int(info.addr)


def _walk_group(group: h5g.GroupID, path: str, *, depth: int, ancestors: frozenset,
                walk: _Walk) -> int:
    """Walk one group's links; returns its height (0: no groups below it)."""
    if depth > MAX_GROUP_DEPTH:
        walk.refuse(f"groups nested deeper than {MAX_GROUP_DEPTH} levels (at {_show(path)})")
    links: list[tuple[bytes, int]] = []

    def collect(name: bytes, info: h5l.LinkInfo) -> bool | None:
        links.append((name, info.type))
        return True if walk.links + len(links) > MAX_LINKS else None  # enough to refuse

    group.links.iterate(collect, info=True)
    height = 0
    for name, kind in links:
        walk.count_links()
        where = f"{path}/{name.decode('utf-8', 'replace')}"
        if kind == h5l.TYPE_HARD:
            obj = h5o.open(group, name)
        elif kind == h5l.TYPE_SOFT:
            obj = _follow_soft(group, name, where, walk, hops=0)
        elif kind == h5l.TYPE_EXTERNAL:
            file, target = group.links.get_val(name)
            walk.refuse(f"{_show(where)} is a link into another file ({_show(file)}:"
                        f"{_show(target)})")
        else:
            walk.refuse(f"{_show(where)} is a user-defined link (type {kind})")
        _check_attributes(obj, where, walk)
        if isinstance(obj, h5g.GroupID):
            height = max(height, 1 + _visit_group(obj, where, depth=depth + 1,
                                                  ancestors=ancestors, walk=walk))
        elif isinstance(obj, h5d.DatasetID):
            _check_dataset(obj, where, walk)
        # a committed datatype holds no data
    return height


def _follow_soft(group: h5g.GroupID, name: bytes, where: str, walk: _Walk, *,
                 hops: int) -> h5o.ObjectID:
    """The object a soft link names, resolved one link at a time, so that a path through a link
    into another file is refused instead of followed."""
    if hops >= MAX_SOFT_HOPS:
        walk.refuse(f"{_show(where)}: more than {MAX_SOFT_HOPS} soft links in a row (a loop?)")
    value = group.links.get_val(name)
    current = h5o.open(group, b"/") if value.startswith(b"/") else group
    for part in (p for p in value.split(b"/") if p not in (b"", b".")):
        walk.count_links()
        if not isinstance(current, h5g.GroupID) or not current.links.exists(part):
            walk.refuse(f"{_show(where)} is a soft link to {_show(value)}, which is not in the file")
        kind = current.links.get_info(part).type
        if kind == h5l.TYPE_HARD:
            current = h5o.open(current, part)
        elif kind == h5l.TYPE_SOFT:
            current = _follow_soft(current, part, where, walk, hops=hops + 1)
        else:
            walk.refuse(f"{_show(where)} is a soft link to {_show(value)}, which leads out of the"
                        " file")
    return current


def _visit_group(group: h5g.GroupID, where: str, *, depth: int, ancestors: frozenset,
                 walk: _Walk) -> int:
    key = _identity(group)
    if key in ancestors:
        walk.refuse(f"{_show(where)} links back to a group that contains it (a loop)")
    seen = walk.walked.get(key)
    if seen is None:
        before = (walk.links, walk.elements, walk.nbytes, walk.vlen)
        height = _walk_group(group, where, depth=depth, ancestors=ancestors | {key}, walk=walk)
        walk.walked[key] = _Subtree(walk.links - before[0], walk.elements - before[1],
                                    walk.nbytes - before[2], height, walk.vlen - before[3])
        return height
    if depth + seen.height > MAX_GROUP_DEPTH:
        walk.refuse(f"groups nested deeper than {MAX_GROUP_DEPTH} levels (below {_show(where)})")
    walk.count_links(seen.links)
    walk.elements += seen.elements
    walk.nbytes += seen.nbytes
    walk.vlen += seen.vlen
    if walk.vlen > MAX_VLEN_ELEMENTS:
        walk.refuse(f"more than {MAX_VLEN_ELEMENTS:,} variable-length values (below {_show(where)})")
    return seen.height


def _check_attributes(obj: h5o.ObjectID, where: str, walk: _Walk) -> None:
    """An object's attributes: how many, and the elements and bytes each declares."""
    count = int(h5o.get_info(obj).num_attrs)
    if count > MAX_ATTRIBUTES:
        walk.refuse(f"{_show(where)} has {count:,} attributes (limit {MAX_ATTRIBUTES})")
    for i in range(count):
        attr = h5a.open(obj, index=i)
        size = int(attr.get_space().get_simple_extent_npoints())
        nbytes = size * int(attr.get_type().get_size())
        if _variable_length(attr.get_type()) and size > MAX_ATTRIBUTE_VLEN_ELEMENTS:
            walk.refuse(f"attribute {_show(attr.name)} of {_show(where)} holds {size:,}"
                        f" variable-length values (limit {MAX_ATTRIBUTE_VLEN_ELEMENTS})")
        if size > MAX_ATTRIBUTE_ELEMENTS or nbytes > MAX_ATTRIBUTE_BYTES:
            walk.refuse(f"attribute {_show(attr.name)} of {_show(where)} claims {size:,} elements,"
                        f" {nbytes:,} bytes (limits {MAX_ATTRIBUTE_ELEMENTS:,},"
                        f" {MAX_ATTRIBUTE_BYTES:,})")


def _check_dataset(dset: h5d.DatasetID, where: str, walk: _Walk) -> None:
    # Storage first: asking an unlimited virtual dataset for its shape opens its source files.
    plist = dset.get_create_plist()
    if plist.get_layout() == h5d.VIRTUAL:
        walk.refuse(f"dataset {_show(where)} is a virtual dataset (its data is read from other"
                    " files)")
    if plist.get_external_count() > 0:
        walk.refuse(f"dataset {_show(where)} keeps its bytes in an external file"
                    f" ({_show(plist.get_external(0)[0])})")
    space = dset.get_space()
    shape = tuple(space.shape or ())
    size = int(space.get_simple_extent_npoints())
    nbytes = size * int(dset.get_type().get_size())
    if size > MAX_DATASET_ELEMENTS:
        walk.refuse(f"dataset {_show(where)} claims shape {shape} ({size:,} elements, limit"
                    f" {MAX_DATASET_ELEMENTS:,})")
    if nbytes > MAX_DATASET_BYTES:
        walk.refuse(f"dataset {_show(where)} claims {nbytes:,} bytes (shape {shape}, limit"
                    f" {MAX_DATASET_BYTES:,} bytes)")
    if _variable_length(dset.get_type()):
        walk.vlen += size
        if walk.vlen > MAX_VLEN_ELEMENTS:
            walk.refuse(f"more than {MAX_VLEN_ELEMENTS:,} variable-length values (at"
                        f" {_show(where)})")
    walk.elements += size
    walk.nbytes += nbytes


def _variable_length(kind: h5t.TypeID) -> bool:
    """A variable-length string or sequence, or a compound or array type holding one."""
    if isinstance(kind, h5t.TypeStringID):
        return bool(kind.is_variable_str())
    if isinstance(kind, h5t.TypeVlenID):
        return True
    if isinstance(kind, h5t.TypeCompoundID):
        return any(_variable_length(kind.get_member_type(i)) for i in range(kind.get_nmembers()))
    if isinstance(kind, h5t.TypeArrayID):
        return _variable_length(kind.get_super())
    return False
