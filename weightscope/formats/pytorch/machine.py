"""A pickle virtual machine that builds plain values and records only, within a budget
proportional to the pickle's size. It replaces CPython's unpickler, which a hostile pickle can
make allocate, loop or recurse without bound.

What it builds: ``None``, booleans, numbers, ``str``, ``bytes``, ``bytearray``, lists, tuples,
dicts (``OrderedDict`` where the pickle asks for one), sets, frozensets, the records of
``records`` and opaque stand-ins. Globals are resolved, and persistent ids loaded, by a
*resolver* (``unpickler.Resolver``): nothing is ever imported, and the only things a pickle can
call are the ``Allowed`` functions the resolver hands out (reimplemented, building through this
machine) and opaque stand-ins (which only record their arguments).

What bounds it, beyond the pickle's size (``max_pickle_bytes``):

- a *budget* (``max_pickle_expansion``): the memory each object built is estimated to take,
  each element added to a container (whenever it is added: a container stored in the memo and
  filled later counts all the same), each memo entry, the work of hashing a key, and later the
  plain values the reader converts objects to, must stay under that many bytes per byte of
  pickle read so far (plus 1 MiB). Every opcode reads at least one byte and pushes at most one
  reference, so the stack itself stays under 8 bytes per byte;
- dict keys and set elements whose hash a file can choose (numbers, tuples of them) are
  counted per hash value and container: a pickle whose keys collide (``hash(n * (2**61 - 1))``
  is 0 for every ``n``) is refused instead of making each insertion compare with all the others
  (strings and bytes hash with a per-process random key). Hashing a key is charged by its size;
- the memo is a list while indices come in order (as picklers write them), with a dict for
  any other index the pickle gives (Python 2's pickler starts at 1), each entry charged: no
  index can make it allocate ahead;
- the depth and tree size (shared parts counted at each use) of what is built are followed as
  it is built (``max_pickle_depth``, ``max_pickle_tree``). A container filled after it was put
  in another is counted as it was then, so these two are early refusals, not guarantees: the
  guarantees are the budget, and that nothing here or in the reader recurses or hashes without
  a bound (hashing a tuple is charged by its size, which immutable tuples always know);
- ``BUILD`` (setting an object's state) applies to opaque stand-ins only; records, plain values
  and the allowed functions cannot be changed once built.
"""

from __future__ import annotations

import codecs
import pickletools
import struct
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import IO, Any, Protocol

from weightscope.formats.pytorch.records import (
    Allowed,
    CallResult,
    Opaque,
    PickleFormatError,
    QScheme,
    StorageRef,
    StorageType,
    TensorRef,
)
from weightscope.gc_pause import paused_gc
from weightscope.limits import DEFAULT, LimitExceeded, Limits

SLACK = 1 << 20
"""Bytes of objects any pickle may build whatever its size."""

WINDOW = 1 << 20
"""How much of a legacy file is read at a time (its pickles are followed by the tensor data,
so the end of a pickle is only known once it is read)."""

MAX_COLLISIONS = 64
"""Keys of one dict (or elements of one set) that may share one hash value: real dicts have at
most a few (``hash(-1) == hash(-2)``); more is a hash flooding attack."""

# estimated memory, in bytes (CPython 3.11, 64-bit, measured with tracemalloc)
LIST, LIST_ITEM = 56, 9
MARK = 72
"""A mark starts a new stack (a list) and is kept on the stack of marks."""
TUPLE, TUPLE_ITEM = 48, 8
DICT, DICT_ITEM = 64, 48
ODICT, ODICT_ITEM = 128, 96
SET, SET_ITEM = 216, 48
OPAQUE = 80
RECORD = 96
MEMO_ENTRY, SMALL_MEMO_ENTRY = 88, 56
SIZE_ENTRY = 96
HASH_STEP = 8
NUMBER = 32
STRING = 56

LEAVES = frozenset(
    {type(None), bool, int, float, complex, str, bytes, bytearray, slice, TensorRef,
     StorageRef, StorageType, Allowed, type, QScheme}
)  # fmt: skip
"""Types whose objects hold nothing a pickle built (records hold checked numbers and strings;
``type`` is an opaque stand-in class): they are leaves of what is built."""

_ID_HASHED = (Opaque, Allowed, type, TensorRef, StorageRef, StorageType, QScheme)
"""Keys hashed by identity, or by fields whose strings hash with a random key."""

_SMALL_INTS = range(-5, 257)
_DOUBLE = struct.Struct(">d")
_UINT16 = struct.Struct("<H").unpack_from
_UINT32 = struct.Struct("<I").unpack_from
_INT32 = struct.Struct("<i").unpack_from
_BINPUT, _LONG_BINPUT, _BINGET, _LONG_BINGET, _BININT1 = b"qrhjK"
_MARK, _BININT2, _BININT, _TUPLE, _EMPTY_TUPLE, _REDUCE, _BINPERSID = b"(MJt)RQ"
_TUPLE1, _TUPLE2, _TUPLE3, _NEWTRUE, _NEWFALSE = b"\x85\x86\x87\x88\x89"
_BINUNICODE = ord("X")
_SMALL_TUPLES = {_TUPLE1: 1, _TUPLE2: 2, _TUPLE3: 3}
REBUILD_TENSOR = "torch._utils._rebuild_tensor_v2"
ORDERED_DICT = "collections.OrderedDict"
_RECORD_BYTES = 320
"""Most bytes :meth:`Machine._tensor_record` reads: a key of up to 64 bytes and dims of up to
8 axes (longer ones go through the opcodes one by one)."""
_ESCAPES: Callable[[bytes], tuple[bytes, int]] = codecs.escape_decode


class Resolver(Protocol):
    def find_class(self, machine: Machine, module: str, name: str) -> Any: ...

    def persistent_load(self, machine: Machine, pid: Any) -> Any: ...


class Budget:
    """What the pickles of one file may build: ``max_pickle_expansion`` bytes per byte of
    pickle read, plus ``SLACK``. Shared by the pickles of a legacy file, and by the plain values
    the reader converts objects to afterwards."""

    def __init__(self, limits: Limits = DEFAULT) -> None:
        self.ratio = limits.max_pickle_expansion
        self.pickle_bytes = 0
        """Bytes of the pickles read to their end."""
        self.spent = 0

    def allowance(self, reading: int = 0) -> int:
        """Bytes allowed, ``reading`` bytes into a pickle not read to its end yet."""
        return SLACK + self.ratio * (self.pickle_bytes + reading)

    def charge(self, amount: int) -> None:
        self.spent += amount
        if self.spent > self.allowance():
            raise self.exceeded()

    def exceeded(self, reading: int = 0) -> LimitExceeded:
        read = self.pickle_bytes + reading
        return LimitExceeded(
            "max_pickle_expansion",
            self.ratio,
            max(self.ratio + 1, -(-self.spent // max(read, 1))),
            f"unpickling builds more than {self.spent:,} bytes of objects (estimated) from "
            f"{read:,} bytes of pickle",
        )


class Machine:
    """Runs one pickle: ``Machine(resolver, data or file, limits, budget).run()``.

    ``source`` is the pickle's bytes, or a file positioned at its start (a legacy stream: read a
    window at a time, and left positioned just after the pickle's STOP; ``read`` must never
    yield more than the file holds)."""

    def __init__(
        self,
        resolver: Resolver,
        source: bytes | IO[bytes],
        limits: Limits = DEFAULT,
        budget: Budget | None = None,
    ) -> None:
        self.resolver = resolver
        self.limits = limits
        self.max_depth = limits.max_pickle_depth
        self.max_tree = limits.max_pickle_tree
        self.budget = budget if budget is not None else Budget(limits)
        self.spent = self.budget.spent
        self.allowed = self.budget.allowance()
        if isinstance(source, (bytes, bytearray, memoryview)):
            self.file: IO[bytes] | None = None
            self.data = bytes(source)
            self.base = 0
            self.file_end = len(self.data)
        else:
            self.file = source
            self.data = b""
            self.base = source.tell()
            self.file_end = source.seek(0, 2)
            source.seek(self.base)
        self.start = self.base
        self.pos = 0
        self.end = len(self.data)
        self.stack: list[Any] = []
        self.metastack: list[list[Any]] = []
        self.memo: list[Any] = []
        """Memo entries 0 to len - 1 (a list: a torch pickle stores 8 per tensor, and a dict of
        1.6 million took 130 MB)."""
        self.sparse_memo: dict[int, Any] = {}
        """Entries at any other index."""
        self.sizes: dict[int, tuple[int, int]] = {}
        """id -> (depth, tree size) of built objects that hold more than leaves."""
        self.collisions: dict[int, tuple[Any, dict[int, int]]] = {}
        """id of a dict or set -> (it, {hash value: keys with it})."""
        self.keep: list[Any] = []
        """Objects whose id is a key above, kept alive while the pickle runs."""
        self.result: Any = None
        dispatch: list[Callable[[], bool | None] | None] = [None] * 256
        for opcode in pickletools.opcodes:
            dispatch[ord(opcode.code)] = getattr(self, f"op_{opcode.name}")
        self.dispatch = dispatch

    # -----------------------------------------------------------------------------------------
    # running

    def run(self) -> Any:
        """The object the pickle builds. Python's cyclic garbage collector is paused meanwhile:
        it would walk the growing heap of containers every few hundred allocations (four
        million empty lists took 4 s instead of 1)."""
        try:
            with paused_gc():
                return self._run()
        finally:
            # The dispatch table's bound methods make the machine a cycle that only a full
            # collection frees, with everything its memo and stack hold: gone with it, what the
            # pickle built is freed as soon as it is dropped.
            self.dispatch = []

    def _run(self) -> Any:
        dispatch = self.dispatch
        memo = self.memo
        sparse = self.sparse_memo
        try:
            while True:
                pos = self.pos
                data = self.data
                if pos + 5 <= self.end:
                    # The opcode and up to 4 bytes of argument are at hand: the opcodes that are
                    # most of a torch pickle (memo, small ints) run here as their op_ method
                    # would, without its call (about 30 opcodes per tensor).
                    code = data[pos]
                    if code == _BINPUT:
                        self.pos = pos + 2
                        self.spent += SMALL_MEMO_ENTRY
                        if self.spent > self.allowed:
                            self.charge(0)
                        index = data[pos + 1]
                        if index == len(memo) and not sparse:
                            memo.append(self.stack[-1])
                        else:
                            self._store(index, self.stack[-1])
                        continue
                    if code == _BININT1:
                        self.pos = pos + 2
                        self.stack.append(data[pos + 1])
                        continue
                    if code == _BINGET:
                        self.pos = pos + 2
                        index = data[pos + 1]
                        self.stack.append(memo[index] if index < len(memo) else self._load(index))
                        continue
                    if code == _LONG_BINGET:
                        self.pos = pos + 5
                        index = _UINT32(data, pos + 1)[0]
                        self.stack.append(memo[index] if index < len(memo) else self._load(index))
                        continue
                    if code == _LONG_BINPUT:
                        self.pos = pos + 5
                        index = _UINT32(data, pos + 1)[0]
                        self.spent += MEMO_ENTRY if index > 256 else SMALL_MEMO_ENTRY
                        if self.spent > self.allowed:
                            self.charge(0)
                        if index == len(memo) and not sparse:
                            memo.append(self.stack[-1])
                        else:
                            self._store(index, self.stack[-1])
                        continue
                    if (
                        code == _MARK
                        and data[pos + 1] == _MARK
                        and self.stack
                        and type(self.stack[-1]) is Allowed
                        and self.stack[-1].name == REBUILD_TENSOR
                        and self._tensor_record(pos)
                    ):
                        continue
                elif pos >= self.end:
                    self._fill(1)
                    pos = self.pos
                code = self.data[pos]
                self.pos = pos + 1
                handler = dispatch[code]
                if handler is None:
                    raise PickleFormatError(
                        f"unknown pickle opcode {code:#04x} at byte {self._offset() - 1:,}"
                    )
                if handler():
                    break
        except IndexError:
            raise PickleFormatError(
                "the pickle takes from its stack more than it put there"
            ) from None
        self.budget.spent = self.spent
        self.budget.pickle_bytes += self._offset()
        if self.file is not None:
            self.file.seek(self.base + self.pos)
        return self.result

    def _tensor_record(self, start: int) -> bool:
        """Run the opcodes of one tensor as ``torch.save`` writes each but the first (protocol 2)
        at once, when they are exactly those: two marks; the storage's persistent id built from
        memoized strings, its key and size; the storage offset, size and stride tuples; the
        requires_grad flag and an empty ``OrderedDict`` of hooks; the arguments tuple; the call
        of ``_rebuild_tensor_v2`` (on the stack already); each object memoized as torch does.
        The result is what the opcodes one by one give: the same objects, memo entries, sizes
        and charges, built by the same helpers; a state dict of 200,000 tensors spent 22 us in
        each tensor's 32 opcodes. Anything else (or a record that could reach a limit) returns
        False before anything is changed, and the opcodes run one by one."""
        data = self.data
        if start + _RECORD_BYTES > self.end:
            return False
        memo = self.memo
        pos = start + 2  # the two marks
        try:
            # the persistent id: ("storage", storage type, key, location, size)
            pid_parts: list[Any] = []
            for _ in range(2):
                index, pos = _memo_index(data, pos, _BINGET, _LONG_BINGET)
                pid_parts.append(memo[index] if index < len(memo) else self.sparse_memo[index])
            if data[pos] != _BINUNICODE:
                return False
            length = _UINT32(data, pos + 1)[0]
            if length > 64:
                return False
            raw = data[pos + 5 : pos + 5 + length]
            pos += 5 + length
            key = raw.decode("utf-8", "surrogatepass")
            key_slot, pos = _memo_index(data, pos, _BINPUT, _LONG_BINPUT)
            index, pos = _memo_index(data, pos, _BINGET, _LONG_BINGET)
            location = memo[index] if index < len(memo) else self.sparse_memo[index]
            numel, pos = _small_int(data, pos)
            if data[pos] != _TUPLE:
                return False
            pid_slot, pos = _memo_index(data, pos + 1, _BINPUT, _LONG_BINPUT)
            if data[pos] != _BINPERSID:
                return False
            offset, pos = _small_int(data, pos + 1)
            shape, shape_marks, pos = _int_tuple(data, pos)
            shape_slot, pos = _memo_index(data, pos, _BINPUT, _LONG_BINPUT)
            stride, stride_marks, pos = _int_tuple(data, pos)
            stride_slot, pos = _memo_index(data, pos, _BINPUT, _LONG_BINPUT)
            flag = data[pos]
            if flag != _NEWFALSE and flag != _NEWTRUE:
                return False
            index, pos = _memo_index(data, pos + 1, _BINGET, _LONG_BINGET)
            ordered = memo[index] if index < len(memo) else self.sparse_memo[index]
            if data[pos] != _EMPTY_TUPLE or data[pos + 1] != _REDUCE:
                return False
            hooks_slot, pos = _memo_index(data, pos + 2, _BINPUT, _LONG_BINPUT)
            if data[pos] != _TUPLE:
                return False
            args_slot, pos = _memo_index(data, pos + 1, _BINPUT, _LONG_BINPUT)
            if data[pos] != _REDUCE:
                return False
            tensor_slot, pos = _memo_index(data, pos + 1, _BINPUT, _LONG_BINPUT)
        except (_NoRecord, KeyError, UnicodeDecodeError):
            return False
        storage_word, storage_type = pid_parts
        if not (
            type(storage_word) is str
            and type(storage_type) is StorageType
            and type(location) is str
            and type(ordered) is Allowed
            and ordered.name == ORDERED_DICT
        ):
            return False
        slots = (key_slot, pid_slot, shape_slot, stride_slot, hooks_slot, args_slot, tensor_slot)
        own = (
            2 * MARK
            + STRING
            + len(raw)
            + sum(MEMO_ENTRY if slot > 256 else SMALL_MEMO_ENTRY for slot in slots)
            + sum(NUMBER + (v.bit_length() >> 3) for v in (numel, offset) if v not in _SMALL_INTS)
            + sum(NUMBER + (v.bit_length() >> 3) for v in shape + stride if v not in _SMALL_INTS)
            + MARK * (shape_marks + stride_marks)
            + 3 * TUPLE
            + TUPLE_ITEM * (5 + len(shape) + len(stride))
            + TUPLE
            + 6 * TUPLE_ITEM
        )
        # what the helpers below charge at most: a new storage, the hooks, the sizes entry of
        # the arguments, the tensor
        helpers = RECORD + STRING + len(key) + ODICT + SIZE_ENTRY + RECORD
        if self.spent + own + helpers > self.allowed:
            return False  # one by one, so that a limit is reached where it is
        # the objects, in the order the opcodes build them (all but the arguments are leaves)
        self.spent += own
        self.pos = pos
        self._store(key_slot, key)
        pid = (storage_word, storage_type, key, location, numel)
        self._store(pid_slot, pid)
        storage = self.resolver.persistent_load(self, pid)
        self._store(shape_slot, shape)
        self._store(stride_slot, stride)
        hooks = ordered.function(self)
        self._store(hooks_slot, hooks)
        args = (storage, offset, shape, stride, flag == _NEWTRUE, hooks)
        tree = 7 + len(shape) + len(stride)
        if type(storage) is StorageRef and tree <= self.max_tree and self.max_depth >= 2:
            # grow(args, args, fresh=True), its parts known: leaves but the dims (fresh tuples,
            # depth 1 and 1 + len each) and the hooks (a fresh empty dict, depth 1 and 1)
            self.keep.append(args)
            self.sizes[id(args)] = (2, tree)
            self.spent += SIZE_ENTRY
        else:
            self.grow(args, args, fresh=True)
        self._store(args_slot, args)
        stack = self.stack
        tensor = stack[-1].function(self, *args)
        stack[-1] = tensor
        self._store(tensor_slot, tensor)
        return True

    def _offset(self) -> int:
        """Bytes of this pickle read so far."""
        return self.base + self.pos - self.start

    def _fill(self, count: int) -> None:
        """Make ``data[pos:pos + count]`` available (legacy files: read more of the file)."""
        if self.file is None or self.base + self.pos + count > self.file_end:
            raise PickleFormatError(
                "unreadable pickle: cut short (it or a length in it runs past its end)"
            )
        keep = self.data[self.pos :]
        self.base += self.pos
        self.pos = 0
        room = self.start + self.limits.max_pickle_bytes - self.base
        if count > room:
            raise self._too_big()
        chunk = self.file.read(min(max(count - len(keep), WINDOW), room - len(keep)))
        self.data = keep + chunk
        self.end = len(self.data)
        if self.end < count:
            raise PickleFormatError("unreadable pickle: cut short")

    def _too_big(self) -> LimitExceeded:
        """The pickle is over ``max_pickle_bytes``: its size, found by walking its opcodes
        (without building anything) to its end, at most twice the limit."""
        assert self.file is not None
        limit = self.limits.max_pickle_bytes
        self.file.seek(self.start)
        scan_end = self.start + 2 * limit + (64 << 20)
        size, more = 0, ""
        try:
            for _opcode, _arg, position in pickletools.genops(self.file):
                if position is not None and position > scan_end:
                    more = "more than "
                    break
        except ValueError:
            pass
        size = self.file.tell() - self.start
        return LimitExceeded(
            "max_pickle_bytes", limit, size, f"the pickle holds {more}{size:,} bytes"
        )

    def _take(self, count: int) -> bytes:
        pos = self.pos
        if pos + count > self.end:
            self._fill(count)
            pos = self.pos
        self.pos = pos + count
        return self.data[pos : pos + count]

    def _line(self) -> bytes:
        """The bytes up to the next newline (not included)."""
        at = self.data.find(b"\n", self.pos)
        while at < 0:
            self._fill(self.end - self.pos + 1)
            at = self.data.find(b"\n", self.pos)
        line = self.data[self.pos : at]
        self.pos = at + 1
        return line

    def _reserve(self, count: int) -> int:
        """Where the next ``count`` bytes lie in ``data``, made available and passed over (the
        hot opcodes below read their arguments there without slicing them out)."""
        pos = self.pos
        if pos + count > self.end:
            self._fill(count)
            pos = self.pos
        self.pos = pos + count
        return pos

    def _length(self, size: int, signed: bool = False) -> int:
        count = int.from_bytes(self._take(size), "little", signed=signed)
        if count < 0:
            raise PickleFormatError("a negative length in the pickle")
        return count

    # -----------------------------------------------------------------------------------------
    # accounting

    def charge(self, amount: int) -> None:
        """Count ``amount`` bytes (estimated) against the budget."""
        self.spent += amount
        if self.spent > self.allowed:
            self.allowed = self.budget.allowance(self._offset())
            if self.spent > self.allowed:
                self.budget.spent = self.spent
                raise self.budget.exceeded(self._offset())

    def _default_size(self, obj: Any, kind: type) -> tuple[int, int]:
        if kind is list or kind is tuple or kind is set or kind is frozenset:
            return 1, 1 + len(obj)
        if kind is dict or kind is OrderedDict:
            return 1, 1 + 2 * len(obj)
        return 1, 1

    def size_of(self, obj: Any) -> tuple[int, int]:
        """(depth, tree size) of ``obj`` as built so far."""
        kind = type(obj)
        if kind in LEAVES:
            return 0, (1 + (obj.bit_length() >> 12)) if kind is int else 1
        found = self.sizes.get(id(obj))
        return found if found is not None else self._default_size(obj, kind)

    def grow(self, obj: Any, parts: Iterable[Any], fresh: bool = False) -> None:
        """``obj`` gains ``parts`` (call before adding them; ``fresh``: it was just built from
        them): follow its depth and tree size, and refuse it past the limits."""
        depth, tree, heavy = 0, 0, False
        sizes = self.sizes
        for part in parts:
            kind = type(part)
            if kind in LEAVES:
                if kind is int and part.bit_length() >= 4096:
                    tree += 1 + (part.bit_length() >> 12)
                    heavy = True
                else:
                    tree += 1
                continue
            found = sizes.get(id(part))
            if found is None:
                found = self._default_size(part, kind)
            if found[0] > depth:
                depth = found[0]
            tree += found[1]
        key = id(obj)
        before = sizes.get(key)
        if before is None:
            if depth == 0 and not heavy:
                return  # leaves only: the size follows from the length
            before = (1, 1) if fresh else self._default_size(obj, type(obj))
            self.keep.append(obj)
            self.charge(SIZE_ENTRY)
        depth = max(before[0], depth + 1)
        tree = before[1] + tree
        if depth > self.max_depth:
            raise LimitExceeded(
                "max_pickle_depth",
                self.max_depth,
                depth,
                f"objects nested more than {self.max_depth} deep in the pickle",
            )
        if tree > self.max_tree:
            raise LimitExceeded(
                "max_pickle_tree",
                self.max_tree,
                tree,
                "an object of the pickle shares parts so often that it cannot be walked "
                f"(over {self.max_tree:,} nodes with each use counted)",
            )
        sizes[key] = (depth, tree)

    def admit(self, container: Any, key: Any) -> None:
        """Before ``key`` is hashed into ``container`` (a dict or set): charge the hashing and
        refuse keys that cannot be hashed or that collide on purpose."""
        kind = type(key)
        if kind is str or kind is bytes:
            return  # hashed with the process's random key, once (and cached)
        if kind is int or kind is bool or kind is float or kind is complex or key is None:
            cost = 1 + (key.bit_length() >> 9) if kind is int else 1
        elif kind is tuple or kind is frozenset:
            cost = self.size_of(key)[1]
        elif isinstance(key, _ID_HASHED):
            return
        else:
            raise PickleFormatError(f"a {kind.__name__} is used as a dict key or set element")
        self.charge(HASH_STEP * cost)
        try:
            value = hash(key)
        except TypeError:
            raise PickleFormatError(
                "a dict key or set element holds a list, dict or set (unhashable)"
            ) from None
        entry = self.collisions.get(id(container))
        if entry is None:
            entry = self.collisions[id(container)] = (container, {})
            self.charge(DICT + DICT_ITEM)
        counts = entry[1]
        count = counts.get(value, 0) + 1
        counts[value] = count
        if count == 1:
            self.charge(DICT_ITEM)
        else:  # inserting it compares it with every earlier key of the same hash
            self.charge(HASH_STEP * cost * count)
            if count > MAX_COLLISIONS:
                raise PickleFormatError(
                    f"more than {MAX_COLLISIONS} keys of one dict or set in the pickle share "
                    "one hash value (hash flooding)"
                )

    # -----------------------------------------------------------------------------------------
    # building, for the opcodes and the allowed functions

    def new_tuple(self, items: Iterable[Any]) -> tuple[Any, ...]:
        value = tuple(items)
        self.charge(TUPLE + TUPLE_ITEM * len(value))
        self.grow(value, value, fresh=True)
        return value

    def new_list(self, items: list[Any]) -> list[Any]:
        self.charge(LIST + LIST_ITEM * len(items))
        self.grow(items, items, fresh=True)
        return items

    def new_dict(self, ordered: bool = False) -> dict[Any, Any]:
        self.charge(ODICT if ordered else DICT)
        return OrderedDict() if ordered else {}

    def set_items(self, target: Any, items: list[Any]) -> None:
        """``target[k] = v`` for each pair of ``items`` (k0, v0, k1, v1, ...)."""
        if len(items) % 2:
            raise PickleFormatError("a key without a value in the pickle")
        table: dict[Any, Any]
        if isinstance(target, dict):
            table = target
        elif isinstance(target, Opaque):
            if target.entries is None:
                target.entries = self.new_dict()
            table = target.entries
        else:
            raise PickleFormatError(f"the pickle sets items of a {_kind(target)}")
        per_item = ODICT_ITEM if type(table) is OrderedDict else DICT_ITEM
        self.charge(per_item * (len(items) // 2))
        self.grow(target, items)
        if table is not target:
            self.grow(table, items)
        admit = self.admit
        for index in range(0, len(items), 2):
            key = items[index]
            admit(table, key)
            table[key] = items[index + 1]

    def dict_from_pairs(self, pairs: Any, ordered: bool = False) -> dict[Any, Any]:
        """A dict (``OrderedDict(pairs)``) from a list or tuple of 2-item lists or tuples."""
        table = self.new_dict(ordered)
        if not pairs and type(pairs) in (list, tuple):
            return table  # OrderedDict(), as torch pickles every tensor's hooks: nothing to set
        if isinstance(pairs, dict):
            flat = [part for pair in pairs.items() for part in pair]
        elif isinstance(pairs, (list, tuple)):
            if not all(type(pair) in (list, tuple) and len(pair) == 2 for pair in pairs):
                raise PickleFormatError("a dict built from something else than pairs")
            flat = [part for pair in pairs for part in pair]
        else:
            raise PickleFormatError(f"a dict built from a {_kind(pairs)}")
        self.set_items(table, flat)
        return table

    def add_items(self, target: Any, items: Iterable[Any]) -> None:
        if type(target) is not set:
            raise PickleFormatError(f"the pickle adds set elements to a {_kind(target)}")
        items = list(items)
        self.charge(SET_ITEM * len(items))
        self.grow(target, items)
        for item in items:
            self.admit(target, item)
            target.add(item)

    def new_set(self, items: Any = (), frozen: bool = False) -> set[Any] | frozenset[Any]:
        if not isinstance(items, (list, tuple, set, frozenset)):
            raise PickleFormatError(f"a set built from a {_kind(items)}")
        built: set[Any] = set()
        self.charge(SET)
        self.add_items(built, items)
        if not frozen:
            return built
        value = frozenset(built)
        self.grow(value, value, fresh=True)
        return value

    def call(self, func: Any, args: Any, kwargs: Any = None) -> Any:
        """What calling ``func`` (REDUCE, INST, OBJ) gives, without running anything from the
        pickle: an allowed function, reimplemented, or an opaque stand-in recording the call."""
        if type(args) is not tuple:
            raise PickleFormatError(f"a call with arguments in a {_kind(args)}, not a tuple")
        if type(func) is Allowed:
            if kwargs:
                raise PickleFormatError(f"{func.name} called with keyword arguments")
            try:
                return func.function(self, *args)
            except TypeError as exc:
                if "positional argument" in str(exc) or "required" in str(exc):
                    raise PickleFormatError(
                        f"{func.name} called with {len(args)} arguments"
                    ) from None
                raise
        if isinstance(func, type) and issubclass(func, Opaque):
            value: Opaque = func(args, kwargs)
            parts: list[Any] = [args]
        elif isinstance(func, Opaque):
            value = CallResult(func, args, kwargs)
            parts = [func, args]
        else:
            raise PickleFormatError(f"the pickle calls a {_kind(func)}")
        if kwargs is not None:
            parts.append(kwargs)
        self.charge(OPAQUE)
        self.grow(value, parts, fresh=True)
        return value

    def stand_in(self, func: Any, args: tuple[Any, ...]) -> CallResult:
        """A record of ``func(*args)``, for a call that is not reimplemented."""
        value = CallResult(func, args)
        self.charge(OPAQUE)
        self.grow(value, [func, args], fresh=True)
        return value

    # -----------------------------------------------------------------------------------------
    # opcodes (as CPython's pickle.py does them, building only what is above)

    def _push_text(self, raw: bytes, utf8: bool = True) -> None:
        try:
            text = raw.decode("utf-8", "surrogatepass") if utf8 else raw.decode("utf-8")
        except UnicodeDecodeError:
            raise PickleFormatError("a string of the pickle is not UTF-8") from None
        self.charge(STRING + len(raw))
        self.stack.append(text)

    def _push_bytes(self, raw: bytes) -> None:
        self.charge(STRING + len(raw))
        self.stack.append(raw)

    def _push_int(self, value: int) -> None:
        if value not in _SMALL_INTS:
            self.charge(NUMBER + (value.bit_length() >> 3))
        self.stack.append(value)

    def _decimal(self, line: bytes, what: str) -> int:
        try:
            return int(line, 0)
        except ValueError:
            raise PickleFormatError(f"a malformed {what} in the pickle") from None

    def op_PROTO(self) -> None:
        if self._take(1)[0] > 5:
            raise PickleFormatError("a pickle protocol over 5")

    def op_FRAME(self) -> None:
        self._take(8)

    def op_STOP(self) -> bool:
        self.result = self.stack.pop()
        return True

    def op_MARK(self) -> None:
        self.spent += MARK
        if self.spent > self.allowed:
            self.charge(0)
        self.metastack.append(self.stack)
        self.stack = []

    def _pop_mark(self) -> list[Any]:
        items = self.stack
        if not self.metastack:
            raise PickleFormatError("the pickle pops to a mark it never set")
        self.stack = self.metastack.pop()
        return items

    def op_POP_MARK(self) -> None:
        self._pop_mark()

    def op_POP(self) -> None:
        if self.stack:
            self.stack.pop()
        else:
            self._pop_mark()

    def op_DUP(self) -> None:
        self.stack.append(self.stack[-1])

    def op_NONE(self) -> None:
        self.stack.append(None)

    def op_NEWTRUE(self) -> None:
        self.stack.append(True)

    def op_NEWFALSE(self) -> None:
        self.stack.append(False)

    def op_INT(self) -> None:
        line = self._line()
        if line == b"00":
            self.stack.append(False)
        elif line == b"01":
            self.stack.append(True)
        else:
            self._push_int(self._decimal(line, "integer"))

    def op_BININT(self) -> None:
        self._push_int(_INT32(self.data, self._reserve(4))[0])

    def op_BININT1(self) -> None:
        pos = self.pos
        if pos >= self.end:
            pos = self._reserve(1)
        else:
            self.pos = pos + 1
        self.stack.append(self.data[pos])  # 0 to 255: small ints, cached by Python, not charged

    def op_BININT2(self) -> None:
        self._push_int(_UINT16(self.data, self._reserve(2))[0])

    def op_LONG(self) -> None:
        line = self._line()
        self._push_int(self._decimal(line[:-1] if line.endswith(b"L") else line, "integer"))

    def op_LONG1(self) -> None:
        raw = self._take(self._length(1))
        self._push_int(int.from_bytes(raw, "little", signed=True))

    def op_LONG4(self) -> None:
        raw = self._take(self._length(4, signed=True))
        self._push_int(int.from_bytes(raw, "little", signed=True))

    def op_FLOAT(self) -> None:
        try:
            value = float(self._line())
        except ValueError:
            raise PickleFormatError("a malformed float in the pickle") from None
        self.charge(NUMBER)
        self.stack.append(value)

    def op_BINFLOAT(self) -> None:
        self.charge(NUMBER)
        self.stack.append(_DOUBLE.unpack(self._take(8))[0])

    def op_STRING(self) -> None:
        line = self._line()
        if len(line) < 2 or line[0] != line[-1] or line[:1] not in (b"'", b'"'):
            raise PickleFormatError("a protocol 0 string without its quotes")
        try:
            raw = _ESCAPES(line[1:-1])[0]
        except ValueError:
            raise PickleFormatError("a malformed protocol 0 string") from None
        self._push_text(raw, utf8=False)

    def op_BINSTRING(self) -> None:
        self._push_text(self._take(self._length(4, signed=True)), utf8=False)

    def op_SHORT_BINSTRING(self) -> None:
        self._push_text(self._take(self._length(1)), utf8=False)

    def op_BINBYTES(self) -> None:
        self._push_bytes(self._take(self._length(4)))

    def op_SHORT_BINBYTES(self) -> None:
        self._push_bytes(self._take(self._length(1)))

    def op_BINBYTES8(self) -> None:
        self._push_bytes(self._take(self._length(8)))

    def op_BYTEARRAY8(self) -> None:
        raw = self._take(self._length(8))
        self.charge(STRING + len(raw))
        self.stack.append(bytearray(raw))

    def op_NEXT_BUFFER(self) -> None:
        raise PickleFormatError("the pickle asks for an out-of-band buffer")

    op_READONLY_BUFFER = op_NEXT_BUFFER

    def op_UNICODE(self) -> None:
        raw = self._line()
        try:
            text = raw.decode("raw-unicode-escape")
        except UnicodeDecodeError:
            raise PickleFormatError("a malformed protocol 0 unicode string") from None
        self.charge(STRING + len(raw))
        self.stack.append(text)

    def op_SHORT_BINUNICODE(self) -> None:
        self._push_text(self._take(self.data[self._reserve(1)]))

    def op_BINUNICODE(self) -> None:
        self._push_text(self._take(_UINT32(self.data, self._reserve(4))[0]))

    def op_BINUNICODE8(self) -> None:
        self._push_text(self._take(self._length(8)))

    def op_EMPTY_LIST(self) -> None:
        self.spent += LIST
        if self.spent > self.allowed:
            self.charge(0)
        self.stack.append([])

    def op_LIST(self) -> None:
        value = self.new_list(self._pop_mark())
        self.stack.append(value)

    def op_APPEND(self) -> None:
        value = self.stack.pop()
        self._extend(self.stack[-1], [value])

    def op_APPENDS(self) -> None:
        items = self._pop_mark()
        self._extend(self.stack[-1], items)

    def _extend(self, target: Any, items: list[Any]) -> None:
        if type(target) is list:
            table = target
        elif isinstance(target, Opaque):
            if target.items is None:
                self.charge(LIST)
                target.items = []
            table = target.items
        else:
            raise PickleFormatError(f"the pickle appends to a {_kind(target)}")
        self.charge(LIST_ITEM * len(items))
        self.grow(target, items)
        if table is not target:
            self.grow(table, items)
        table.extend(items)

    def op_EMPTY_TUPLE(self) -> None:
        self.stack.append(())

    def op_TUPLE(self) -> None:
        value = self.new_tuple(self._pop_mark())
        self.stack.append(value)

    def op_TUPLE1(self) -> None:
        stack = self.stack
        stack[-1] = self.new_tuple((stack[-1],))

    def op_TUPLE2(self) -> None:
        self._tuple_of_last(2)

    def op_TUPLE3(self) -> None:
        self._tuple_of_last(3)

    def _tuple_of_last(self, count: int) -> None:
        stack = self.stack
        if len(stack) < count:
            raise IndexError
        value = self.new_tuple(stack[-count:])
        del stack[-count:]
        stack.append(value)

    def op_EMPTY_DICT(self) -> None:
        self.spent += DICT
        if self.spent > self.allowed:
            self.charge(0)
        self.stack.append({})

    def op_DICT(self) -> None:
        items = self._pop_mark()
        table = self.new_dict()
        self.set_items(table, items)
        self.stack.append(table)

    def op_SETITEM(self) -> None:
        stack = self.stack
        value = stack.pop()
        key = stack.pop()
        self.set_items(stack[-1], [key, value])

    def op_SETITEMS(self) -> None:
        items = self._pop_mark()
        self.set_items(self.stack[-1], items)

    def op_EMPTY_SET(self) -> None:
        self.spent += SET
        if self.spent > self.allowed:
            self.charge(0)
        self.stack.append(set())

    def op_ADDITEMS(self) -> None:
        items = self._pop_mark()
        self.add_items(self.stack[-1], items)

    def op_FROZENSET(self) -> None:
        value = self.new_set(self._pop_mark(), frozen=True)
        self.stack.append(value)

    # memo

    def _put(self, index: int) -> None:
        if index < 0:
            raise PickleFormatError("a negative memo index in the pickle")
        self.charge(MEMO_ENTRY if index > 256 else SMALL_MEMO_ENTRY)
        self._store(index, self.stack[-1])

    def _store(self, index: int, value: Any) -> None:
        """``memo[index] = value``: in the list when the index is in it or just after it (the
        dict's entry of that index, if any, is then superseded), in the dict otherwise."""
        memo = self.memo
        if index < len(memo):
            memo[index] = value
        elif index == len(memo):
            memo.append(value)
            self.sparse_memo.pop(index, None)
        else:
            self.sparse_memo[index] = value

    def _load(self, index: int) -> Any:
        """``memo[index]``."""
        if 0 <= index < len(self.memo):
            return self.memo[index]
        try:
            return self.sparse_memo[index]
        except KeyError:
            raise PickleFormatError(
                f"memo index {index} read in the pickle but never stored"
            ) from None

    def _get(self, index: int) -> None:
        self.stack.append(self._load(index))

    def op_PUT(self) -> None:
        self._put(self._decimal(self._line(), "memo index"))

    # The memo opcodes are a third of a torch pickle's: each does the work of _put or _get
    # in place, without the calls.

    def op_BINPUT(self) -> None:
        index = self.data[self._reserve(1)]
        self.spent += SMALL_MEMO_ENTRY
        if self.spent > self.allowed:
            self.charge(0)
        self._store(index, self.stack[-1])

    def op_LONG_BINPUT(self) -> None:
        index = _UINT32(self.data, self._reserve(4))[0]
        self.spent += MEMO_ENTRY if index > 256 else SMALL_MEMO_ENTRY
        if self.spent > self.allowed:
            self.charge(0)
        self._store(index, self.stack[-1])

    def op_MEMOIZE(self) -> None:
        self._put(len(self.memo) + len(self.sparse_memo))

    def op_GET(self) -> None:
        self._get(self._decimal(self._line(), "memo index"))

    def op_BINGET(self) -> None:
        self._get(self.data[self._reserve(1)])

    def op_LONG_BINGET(self) -> None:
        self._get(_UINT32(self.data, self._reserve(4))[0])

    def op_EXT1(self) -> None:
        raise PickleFormatError("the pickle uses the copyreg extension registry")

    op_EXT2 = op_EXT4 = op_EXT1

    # globals, persistent ids and calls

    def _name(self, raw: bytes) -> str:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise PickleFormatError("a global's name in the pickle is not UTF-8") from None

    def op_GLOBAL(self) -> None:
        module = self._name(self._line())
        name = self._name(self._line())
        self.stack.append(self.resolver.find_class(self, module, name))

    def op_STACK_GLOBAL(self) -> None:
        stack = self.stack
        name = stack.pop()
        module = stack.pop()
        if type(module) is not str or type(name) is not str:
            raise PickleFormatError("STACK_GLOBAL with a module or name that is not a string")
        stack.append(self.resolver.find_class(self, module, name))

    def op_PERSID(self) -> None:
        try:
            pid = self._line().decode("ascii")
        except UnicodeDecodeError:
            raise PickleFormatError("a persistent id of the pickle is not ASCII") from None
        self.stack.append(self.resolver.persistent_load(self, pid))

    def op_BINPERSID(self) -> None:
        stack = self.stack
        stack[-1] = self.resolver.persistent_load(self, stack[-1])

    def op_REDUCE(self) -> None:
        stack = self.stack
        args = stack.pop()
        stack[-1] = self.call(stack[-1], args)

    def op_INST(self) -> None:
        module = self._name(self._line())
        name = self._name(self._line())
        cls = self.resolver.find_class(self, module, name)
        value = self.call(cls, tuple(self._pop_mark()))
        self.stack.append(value)

    def op_OBJ(self) -> None:
        items = self._pop_mark()
        if not items:
            raise IndexError
        self.stack.append(self.call(items[0], tuple(items[1:])))

    def op_NEWOBJ(self) -> None:
        stack = self.stack
        args = stack.pop()
        stack[-1] = self._new(stack[-1], args, None)

    def op_NEWOBJ_EX(self) -> None:
        stack = self.stack
        kwargs = stack.pop()
        args = stack.pop()
        if type(kwargs) is not dict:
            raise PickleFormatError("NEWOBJ_EX with keyword arguments that are not a dict")
        stack[-1] = self._new(stack[-1], args, kwargs)

    def _new(self, cls: Any, args: Any, kwargs: Any) -> Any:
        """``cls.__new__(cls, *args)``: a stand-in, or an empty allowed container."""
        if type(args) is not tuple:
            raise PickleFormatError(f"NEWOBJ with arguments in a {_kind(args)}, not a tuple")
        if type(cls) is Allowed and cls.name in ("collections.OrderedDict", "builtins.set"):
            if cls.name == "builtins.set":
                self.charge(SET)
                return set()
            return self.new_dict(ordered=True)
        if not (isinstance(cls, type) and issubclass(cls, Opaque)):
            raise PickleFormatError(f"the pickle creates an object of a {_kind(cls)}")
        return self.call(cls, args, kwargs or None)

    def op_BUILD(self) -> None:
        stack = self.stack
        state = stack.pop()
        target = stack[-1]
        if isinstance(target, Opaque):
            self.grow(target, [state])
            target.state = state
        elif type(target) is OrderedDict and _attributes(state):
            pass  # attributes of a state dict (its `_metadata`): nothing weightscope reads
        elif type(target) is Allowed:
            raise PickleFormatError("the pickle tries to alter a tensor rebuilding function")
        elif type(target) in (TensorRef, StorageRef, StorageType, QScheme):
            raise PickleFormatError(
                f"the pickle tries to alter a {_kind(target)} after it was rebuilt (BUILD)"
            )
        else:
            raise PickleFormatError(f"the pickle sets the state of a {_kind(target)} (BUILD)")


class _NoRecord(Exception):
    """The bytes are not a tensor record of :meth:`Machine._tensor_record`."""


def _memo_index(data: bytes, pos: int, short: int, long: int) -> tuple[int, int]:
    """The memo index of a BINPUT/LONG_BINPUT (or BINGET/LONG_BINGET) at ``pos``, and the
    position after it."""
    code = data[pos]
    if code == short:
        return data[pos + 1], pos + 2
    if code == long:
        return _UINT32(data, pos + 1)[0], pos + 5
    raise _NoRecord


def _small_int(data: bytes, pos: int) -> tuple[int, int]:
    """A BININT1, BININT2 or non-negative BININT at ``pos``, and the position after it."""
    code = data[pos]
    if code == _BININT1:
        return data[pos + 1], pos + 2
    if code == _BININT2:
        return _UINT16(data, pos + 1)[0], pos + 3
    if code == _BININT:
        value = _INT32(data, pos + 1)[0]
        if value >= 0:
            return value, pos + 5
    raise _NoRecord


def _int_tuple(data: bytes, pos: int) -> tuple[tuple[int, ...], int, int]:
    """A tuple of up to 8 small ints as pickle writes it (TUPLE1-3 after them, or a MARK
    before and TUPLE after): the tuple, the marks it set, and the position after it."""
    marks = 0
    if data[pos] == _MARK:
        marks, pos = 1, pos + 1
    values: list[int] = []
    while len(values) <= 8:
        code = data[pos]
        if marks and code == _TUPLE:
            return tuple(values), marks, pos + 1
        if not marks and code in _SMALL_TUPLES:
            if _SMALL_TUPLES[code] != len(values):
                raise _NoRecord
            return tuple(values), marks, pos + 1
        value, pos = _small_int(data, pos)
        values.append(value)
    raise _NoRecord


def _kind(value: Any) -> str:
    """What ``value`` is, in words, for an error line."""
    if isinstance(value, TensorRef):
        return "tensor"
    if isinstance(value, (StorageRef, StorageType)):
        return "storage"
    if isinstance(value, type) and issubclass(value, Opaque):
        return f"class {value.qualname}"
    if isinstance(value, Opaque):
        return f"{value.qualname} object"
    return type(value).__name__


def _attributes(state: Any) -> bool:
    """Whether ``state`` is what CPython's BUILD sets as attributes: a dict, or a pair of
    dicts (or None) for ``__dict__`` and slots."""
    if type(state) is tuple and len(state) == 2:
        return all(part is None or type(part) is dict for part in state)
    return state is None or type(state) is dict
