"""RFC 9162 §2.1 Merkle tree: known answers, agreement with pymerkle, proofs and their checks."""

from __future__ import annotations

import hashlib

import pytest
from pymerkle import InmemoryTree
from pymerkle import verify_consistency as pm_verify_consistency

from amistack.eventlog.merkle import (
    EMPTY_ROOT,
    Frontier,
    MerkleError,
    MerkleTree,
    leaf_hash,
    node_hash,
    root_from_leaves,
    verify_consistency,
    verify_inclusion,
)

# The 8-leaf test tree of RFC 6962's reference implementation (certificate-transparency
# merkle_tree_test): leaves and the tree head after each append.
CT_LEAVES = [
    b"",
    b"\x00",
    b"\x10",
    b"\x20\x21",
    b"\x30\x31",
    b"\x40\x41\x42\x43",
    b"\x50\x51\x52\x53\x54\x55\x56\x57",
    bytes(range(0x60, 0x70)),
]
CT_ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]


def entries(n: int) -> list[bytes]:
    return [b"event %d" % i for i in range(n)]


def build(data: list[bytes]) -> tuple[MerkleTree, Frontier, InmemoryTree]:
    t, f, pm = MerkleTree(), Frontier(), InmemoryTree(algorithm="sha256")
    for d in data:
        t.append(d)
        f.append(d)
        pm.append_entry(d)
    return t, f, pm


def rfc_subproof(m: int, leaves: list[bytes], b: bool) -> list[bytes]:
    """SUBPROOF(m, D[n], b) exactly as RFC 9162 §2.1.4.1 writes it, over leaf hashes."""
    n = len(leaves)
    if m == n:
        return [] if b else [root_from_leaves(leaves)]
    k = 1 << ((n - 1).bit_length() - 1)
    if m <= k:
        return [*rfc_subproof(m, leaves[:k], b), root_from_leaves(leaves[k:])]
    return [*rfc_subproof(m - k, leaves[k:], False), root_from_leaves(leaves[:k])]


def test_empty_tree_is_hash_of_nothing() -> None:
    assert MerkleTree().root() == Frontier().root() == EMPTY_ROOT == hashlib.sha256().digest()


def test_known_answers_from_the_ct_reference_tree() -> None:
    tree, frontier = MerkleTree(), Frontier()
    for i, leaf in enumerate(CT_LEAVES):
        tree.append(leaf)
        frontier.append(leaf)
        assert frontier.root().hex() == CT_ROOTS[i]
    assert [tree.root(n).hex() for n in range(1, 9)] == CT_ROOTS


def test_prefixes_are_rfc_9162_domain_separation() -> None:
    assert leaf_hash(b"x") == hashlib.sha256(b"\x00x").digest()
    assert (
        node_hash(b"a" * 32, b"b" * 32) == hashlib.sha256(b"\x01" + b"a" * 32 + b"b" * 32).digest()
    )


def test_roots_agree_with_pymerkle_at_every_size() -> None:
    data = entries(300)
    tree, frontier, pm = MerkleTree(), Frontier(), InmemoryTree(algorithm="sha256")
    for d in data:
        tree.append(d)
        frontier.append(d)
        pm.append_entry(d)
        assert frontier.root() == pm.get_root() == tree.root()
    for n in (1, 2, 3, 127, 128, 129, 255, 256, 257, 300):
        assert tree.root(n) == pm.get_root(n)


def test_inclusion_proofs_equal_pymerkle_paths_and_verify() -> None:
    tree, _, pm = build(entries(70))
    for n in range(1, 71):
        root = tree.root(n)
        for i in range(n):
            path = tree.inclusion_proof(i, n)
            theirs = pm.prove_inclusion(i + 1, n)
            # pymerkle's path starts with the leaf itself, then the RFC 9162 audit path.
            assert theirs.path[0] == tree.leaf_hash(i)
            assert list(theirs.path[1:]) == path
            assert verify_inclusion(tree.leaf_hash(i), i, n, path, root)


@pytest.mark.parametrize("size", [1000, 1024, 1025])
def test_inclusion_at_larger_sizes(size: int) -> None:
    tree, _, pm = build(entries(size))
    for i in (0, 1, size // 3, size - 2, size - 1):
        path = tree.inclusion_proof(i, size)
        assert list(pm.prove_inclusion(i + 1, size).path[1:]) == path
        assert len(path) <= (size - 1).bit_length()
        assert verify_inclusion(tree.leaf_hash(i), i, size, path, tree.root())


def test_inclusion_verification_rejects_tampering() -> None:
    tree, _, _ = build(entries(13))
    leaf, path, root = tree.leaf_hash(6), tree.inclusion_proof(6, 13), tree.root()
    assert verify_inclusion(leaf, 6, 13, path, root)
    assert not verify_inclusion(tree.leaf_hash(5), 6, 13, path, root)  # another leaf
    assert not verify_inclusion(leaf, 7, 13, path, root)  # another position
    assert not verify_inclusion(leaf, 6, 8, path, root)  # another size (other path shape)
    assert not verify_inclusion(leaf, 6, 13, path[:-1], root)  # short path
    assert not verify_inclusion(leaf, 6, 13, [*path, path[0]], root)  # long path
    assert not verify_inclusion(leaf, 13, 13, path, root)  # index == size
    bad = [bytes([path[0][0] ^ 1]) + path[0][1:], *path[1:]]
    assert not verify_inclusion(leaf, 6, 13, bad, root)


def test_consistency_proofs_follow_the_rfc_and_cross_check_with_pymerkle() -> None:
    data = entries(70)
    tree, _, pm = build(data)
    leaves = [leaf_hash(d) for d in data]
    for n in range(1, 71):
        for m in range(1, n + 1):
            proof = tree.consistency_proof(m, n)
            assert proof == rfc_subproof(m, leaves[:n], True)
            assert verify_consistency(m, n, tree.root(m), tree.root(n), proof)
            # pymerkle lays out its consistency proof differently; it must accept our heads.
            pm_verify_consistency(tree.root(m), tree.root(n), pm.prove_consistency(m, n))


def test_consistency_verification_rejects_forks_and_rollbacks() -> None:
    tree, _, _ = build(entries(20))
    fork, _, _ = build([*entries(7), b"forged", *entries(20)[8:]])
    proof = tree.consistency_proof(11, 20)
    assert verify_consistency(11, 20, tree.root(11), tree.root(20), proof)
    assert not verify_consistency(11, 20, fork.root(11), tree.root(20), proof)
    assert not verify_consistency(11, 20, tree.root(11), fork.root(20), proof)
    assert not verify_consistency(11, 20, fork.root(11), fork.root(20), proof)
    assert not verify_consistency(20, 11, tree.root(20), tree.root(11), proof)
    assert not verify_consistency(11, 20, tree.root(11), tree.root(20), [])
    assert not verify_consistency(10, 20, tree.root(11), tree.root(20), proof)
    assert verify_consistency(20, 20, tree.root(), tree.root(), [])
    assert not verify_consistency(20, 20, tree.root(), fork.root(), [])
    assert verify_consistency(0, 20, EMPTY_ROOT, tree.root(), [])
    # power-of-two first size: its hash is implied, the path omits it
    assert verify_consistency(8, 20, tree.root(8), tree.root(20), tree.consistency_proof(8, 20))
    assert not verify_consistency(8, 20, fork.root(8), tree.root(20), tree.consistency_proof(8, 20))


def test_proof_arguments_out_of_range() -> None:
    tree, _, _ = build(entries(5))
    with pytest.raises(MerkleError):
        tree.inclusion_proof(5, 5)
    with pytest.raises(MerkleError):
        tree.inclusion_proof(0, 6)
    with pytest.raises(MerkleError):
        tree.consistency_proof(0, 5)
    with pytest.raises(MerkleError):
        tree.root(6)


def test_frontier_stays_logarithmic() -> None:
    f = Frontier()
    for i in range(5000):
        f.append_leaf_hash(i.to_bytes(32, "big"))
    assert len(f._hashes) == bin(5000).count("1")
