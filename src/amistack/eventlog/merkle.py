"""RFC 9162 (Certificate Transparency 2.0) §2.1 Merkle tree hash over SHA-256.

`Frontier` is the compact form a meter or a streaming verifier keeps (O(log n) hashes, O(1)
amortised append); `MerkleTree` keeps every perfect subtree hash so it can produce inclusion
(§2.1.3.1) and consistency (§2.1.4.1) proofs and the tree head at any earlier size in O(log n)
lookups. The two verification functions follow §2.1.3.2 and §2.1.4.2 step by step.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

HASH_SIZE = 32
LEAF_PREFIX = b"\x00"  # RFC 9162 §2.1.1: MTH({d(0)}) = HASH(0x00 || d(0))
NODE_PREFIX = b"\x01"  # RFC 9162 §2.1.1: MTH(D[n]) = HASH(0x01 || MTH(D[0:k]) || MTH(D[k:n]))
EMPTY_ROOT = hashlib.sha256(b"").digest()  # RFC 9162 §2.1.1: MTH({}) = HASH()

_sha256 = hashlib.sha256


class MerkleError(ValueError):
    """A proof or tree head was asked for a size or index the tree does not have."""


def leaf_hash(data: bytes) -> bytes:
    return _sha256(LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return _sha256(NODE_PREFIX + left + right).digest()


def _split(n: int) -> int:
    """k: the largest power of two smaller than n (RFC 9162 §2.1.1), n > 1."""
    return 1 << ((n - 1).bit_length() - 1)


def root_from_leaves(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH straight from the recursive definition (reference; O(n) memory and time)."""
    n = len(leaf_hashes)
    if n == 0:
        return EMPTY_ROOT
    if n == 1:
        return leaf_hashes[0]
    k = _split(n)
    return node_hash(root_from_leaves(leaf_hashes[:k]), root_from_leaves(leaf_hashes[k:]))


class Frontier:
    """The roots of the perfect subtrees that make up a tree of `size` leaves, left to right.

    Appending merges equal-sized subtrees like a binary counter, so it stores at most
    log2(n)+1 hashes and does 1 node hash per append on average.
    """

    __slots__ = ("_hashes", "size")

    def __init__(self) -> None:
        self.size = 0
        self._hashes: list[bytes] = []

    def append_leaf_hash(self, h: bytes) -> None:
        hashes = self._hashes
        n = self.size
        while n & 1:
            h = _sha256(NODE_PREFIX + hashes.pop() + h).digest()
            n >>= 1
        hashes.append(h)
        self.size += 1

    def append(self, data: bytes) -> bytes:
        """Append a leaf's data; returns its leaf hash."""
        h = _sha256(LEAF_PREFIX + data).digest()
        self.append_leaf_hash(h)
        return h

    def root(self) -> bytes:
        """MTH of the current tree: fold the subtree roots from the right (§2.1.1 recursion)."""
        if not self._hashes:
            return EMPTY_ROOT
        hashes = self._hashes
        r = hashes[-1]
        for h in reversed(hashes[:-1]):
            r = _sha256(NODE_PREFIX + h + r).digest()
        return r

    def copy(self) -> Frontier:
        f = Frontier()
        f.size = self.size
        f._hashes = list(self._hashes)
        return f


class MerkleTree:
    """A tree that keeps every completed perfect subtree hash (about 2n hashes, 64 MB at 1M)."""

    def __init__(self) -> None:
        # _levels[l] holds, packed, the hashes of the complete aligned subtrees of 2**l leaves.
        self._levels: list[bytearray] = [bytearray()]
        self.size = 0

    def append_leaf_hash(self, h: bytes) -> None:
        levels = self._levels
        levels[0] += h
        i = self.size
        lvl = 0
        while i & 1:
            row = levels[lvl]
            h = _sha256(NODE_PREFIX + bytes(row[-64:-32]) + h).digest()
            lvl += 1
            if lvl == len(levels):
                levels.append(bytearray())
            levels[lvl] += h
            i >>= 1
        self.size += 1

    def append(self, data: bytes) -> bytes:
        h = _sha256(LEAF_PREFIX + data).digest()
        self.append_leaf_hash(h)
        return h

    def leaf_hash(self, index: int) -> bytes:
        if not 0 <= index < self.size:
            raise MerkleError(f"leaf {index} is not in a tree of {self.size}")
        return bytes(self._levels[0][index * 32 : index * 32 + 32])

    def _subtree(self, start: int, end: int) -> bytes:
        """MTH(D[start:end]); ranges from the §2.1 recursion are aligned, so every perfect
        part is a stored node."""
        width = end - start
        if width == 0:
            return EMPTY_ROOT
        if width & (width - 1) == 0 and start % width == 0:
            lvl = width.bit_length() - 1
            j = start >> lvl
            return bytes(self._levels[lvl][j * 32 : j * 32 + 32])
        k = _split(width)
        return _sha256(
            NODE_PREFIX + self._subtree(start, start + k) + self._subtree(start + k, end)
        ).digest()

    def root(self, size: int | None = None) -> bytes:
        """The tree head (MTH) of the first `size` leaves (default: all)."""
        size = self.size if size is None else size
        if not 0 <= size <= self.size:
            raise MerkleError(f"size {size} is beyond the tree's {self.size} leaves")
        return self._subtree(0, size)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """PATH(m, D[n]) (RFC 9162 §2.1.3.1), bottom-up."""
        size = self.size if size is None else size
        if not 0 <= index < size <= self.size:
            raise MerkleError(f"no leaf {index} in a tree of size {size} (have {self.size})")
        path: list[bytes] = []
        self._path(index, 0, size, path)
        return path

    def _path(self, m: int, start: int, end: int, out: list[bytes]) -> None:
        n = end - start
        if n <= 1:
            return
        k = _split(n)
        if m < k:
            self._path(m, start, start + k, out)
            out.append(self._subtree(start + k, end))
        else:
            self._path(m - k, start + k, end, out)
            out.append(self._subtree(start, start + k))

    def consistency_proof(self, first: int, second: int | None = None) -> list[bytes]:
        """PROOF(m, D[n]) = SUBPROOF(m, D[n], true) (RFC 9162 §2.1.4.1); 0 < m <= n."""
        second = self.size if second is None else second
        if not 0 < first <= second <= self.size:
            raise MerkleError(f"no consistency proof {first} -> {second} (have {self.size})")
        out: list[bytes] = []
        self._subproof(first, 0, second, True, out)
        return out

    def _subproof(self, m: int, start: int, end: int, b: bool, out: list[bytes]) -> None:
        n = end - start
        if m == n:
            if not b:
                out.append(self._subtree(start, end))
            return
        k = _split(n)
        if m <= k:
            self._subproof(m, start, start + k, b, out)
            out.append(self._subtree(start + k, end))
        else:
            self._subproof(m - k, start + k, end, False, out)
            out.append(self._subtree(start, start + k))


def verify_inclusion(
    leaf: bytes, index: int, tree_size: int, path: Sequence[bytes], root: bytes
) -> bool:
    """RFC 9162 §2.1.3.2: does `leaf` (a leaf hash) sit at `index` in the tree with `root`?"""
    # 1. leaf_index must be < tree_size
    if not 0 <= index < tree_size:
        return False
    # 2. fn = leaf_index, sn = tree_size - 1;  3. r = hash
    fn, sn, r = index, tree_size - 1, leaf
    # 4. for each p in inclusion_path
    for p in path:
        if len(p) != HASH_SIZE or sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = _sha256(NODE_PREFIX + p + r).digest()
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = _sha256(NODE_PREFIX + r + p).digest()
        fn >>= 1
        sn >>= 1
    # 5. sn must be 0 and r must equal root_hash
    return sn == 0 and r == root


def verify_consistency(
    first: int, second: int, first_hash: bytes, second_hash: bytes, path: Sequence[bytes]
) -> bool:
    """RFC 9162 §2.1.4.2: is the tree (second, second_hash) an append-only extension of
    (first, first_hash)?  first == second needs an empty proof and equal hashes; an empty
    first tree is a prefix of every tree (there is nothing to prove, §2.1.4)."""
    if not 0 <= first <= second:
        return False
    if any(len(c) != HASH_SIZE for c in path):
        return False
    if first == second:
        return not path and first_hash == second_hash
    if first == 0:
        return not path and first_hash == EMPTY_ROOT
    # 1. an empty consistency_path fails
    if not path:
        return False
    # 2. if first is an exact power of 2, prepend first_hash
    proof = list(path)
    if first & (first - 1) == 0:
        proof.insert(0, first_hash)
    # 3. fn = first - 1, sn = second - 1
    fn, sn = first - 1, second - 1
    # 4. if LSB(fn) is set, right-shift both until it is not
    while fn & 1:
        fn >>= 1
        sn >>= 1
    # 5. fr = sr = first value
    fr = sr = proof[0]
    # 6. each subsequent value c
    for c in proof[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = _sha256(NODE_PREFIX + c + fr).digest()
            sr = _sha256(NODE_PREFIX + c + sr).digest()
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = _sha256(NODE_PREFIX + sr + c).digest()
        fn >>= 1
        sn >>= 1
    # 7. fr == first_hash, sr == second_hash, sn == 0
    return sn == 0 and fr == first_hash and sr == second_hash
