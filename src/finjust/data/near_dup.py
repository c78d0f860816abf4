"""Near-duplicate texts: MinHash signatures (datasketch) and LSH banding over compact arrays.

datasketch computes the MinHash signatures and chooses the LSH band layout (``MinHashLSH``
picks bands and rows that minimise false positives and negatives at the threshold). The
bucketing itself is done here on sorted numpy arrays because ``MinHashLSH``'s in-memory
index keeps a Python dict and set per band bucket: measured at about 1.9 KB per record,
1.9 GB for a million records. Here a record costs its band hashes (8 bytes a band) and one
byte per permutation (the low byte of each MinHash value, the b-bit MinHash of Li and König,
from which the Jaccard similarity is estimated when a candidate pair is verified).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from datasketch import MinHash, MinHashLSH

NUM_PERM = 64
NGRAM = 5
#: buckets up to this many records verify every pair; larger ones (templated data can put
#: thousands of records in one) each member against the bucket's first only, so the work
#: stays linear: at most ALL_PAIRS_MAX / 2 verifications per record and band
ALL_PAIRS_MAX = 64
#: candidate pairs verified per batch, which bounds the arrays a band's verification builds
PAIRS_PER_BATCH = 1 << 16


def _identity(value: int) -> int:
    return value


class MinHasher:
    """MinHash signatures of a text's character 5-grams (lower-cased, whitespace collapsed)."""

    def __init__(self, num_perm: int = NUM_PERM, ngram: int = NGRAM, seed: int = 1) -> None:
        self.num_perm, self.ngram = num_perm, ngram
        # shingles are hashed to 32 bits below, so datasketch only permutes them (identity hashfunc)
        self._minhash = MinHash(num_perm=num_perm, seed=seed, hashfunc=_identity)
        # powers from 1 up: with p^0 = 1 a window's first byte would stay in the low 32 bits,
        # which the shift below drops (texts differing only there would hash alike)
        self._powers = np.array([pow(0x100000001B3, i + 1, 2**64) for i in range(ngram)], dtype=np.uint64)

    def shingles(self, text: str) -> np.ndarray:
        """The distinct 32-bit hashes of the text's character n-grams (UTF-8 bytes)."""
        data = np.frombuffer(" ".join(text.lower().split()).encode("utf-8"), dtype=np.uint8)
        if data.size < self.ngram:
            data = np.pad(data, (0, self.ngram - data.size))
        # hashing each n-gram through hashlib (datasketch's default) costs ~150 us a record;
        # one vectorised polynomial hash over the byte windows costs a few
        data = data.astype(np.uint64)
        count = data.size - self.ngram + 1
        hashes = data[:count] * self._powers[0]
        for offset in range(1, self.ngram):
            hashes += data[offset : offset + count] * self._powers[offset]
        return np.unique((hashes >> np.uint64(32)).astype(np.uint32))

    def signature(self, text: str) -> np.ndarray:
        """The MinHash values (uint32, ``num_perm`` of them) of ``text``; empty text gives all-max."""
        self._minhash.clear()
        if text:
            self._minhash.update_batch(self.shingles(text).tolist())
        return self._minhash.hashvalues.copy()


def band_layout(threshold: float, num_perm: int = NUM_PERM) -> tuple[int, int]:
    """(bands, rows) that datasketch's ``MinHashLSH`` would use to find pairs at ``threshold``.

    The layout is chosen for 0.8 x the threshold: the layout for the threshold itself finds
    only about half of the pairs right at it (its S-curve is centred there), and every
    candidate is verified against the real threshold afterwards anyway.
    """
    lsh = MinHashLSH(threshold=0.8 * threshold, num_perm=num_perm)
    return lsh.b, lsh.r


class SignatureStore:
    """Band hashes and low bytes of many signatures, appended in record order."""

    def __init__(self, threshold: float, num_perm: int = NUM_PERM) -> None:
        self.bands, self.rows = band_layout(threshold, num_perm)
        self.num_perm = num_perm
        rng = np.random.default_rng(12345)
        # a random odd multiplier per row: the band hash is a universal hash of the band's values
        self._mix = rng.integers(1, 2**63, size=self.rows, dtype=np.uint64) | np.uint64(1)
        self._band_bytes = bytearray()
        self._low_bytes = bytearray()
        self.count = 0

    def add(self, signatures: np.ndarray) -> None:
        """Append a batch of signatures (shape ``(n, num_perm)``, uint32)."""
        used = signatures[:, : self.bands * self.rows].astype(np.uint64).reshape(len(signatures), self.bands, self.rows)
        self._band_bytes += (used * self._mix).sum(axis=2, dtype=np.uint64).tobytes()
        self._low_bytes += (signatures & 0xFF).astype(np.uint8).tobytes()
        self.count += len(signatures)

    def _arrays(self) -> tuple[np.ndarray, np.ndarray]:
        bands = np.frombuffer(bytes(self._band_bytes), dtype=np.uint64).reshape(self.count, self.bands)
        low = np.frombuffer(bytes(self._low_bytes), dtype=np.uint8).reshape(self.count, self.num_perm)
        return bands, low

    def similar_pairs(
        self, threshold: float, members: np.ndarray, bucket: np.ndarray | None = None, rank: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Verified near pairs (anchor, other, estimated Jaccard) among ``members``, each pair once.

        In every band, the records sharing a band value (and, when given, a ``bucket`` value,
        such as their split) form a bucket, ordered by ``rank`` and then index. A bucket of up to
        :data:`ALL_PAIRS_MAX` records verifies every pair (the earlier member as the anchor);
        a larger one verifies each member against its first only, so crowded buckets stay
        linear, at the price of missing two near-copies that both differ from that first member.

        Args:
            threshold: the estimated Jaccard similarity a pair must reach.
            members: record indices to consider.
            bucket: per record (indexed by record), a value that must also be equal.
            rank: per record, lower ranks become anchors first (e.g. training records).
        """
        members = np.asarray(members, dtype=np.int64)
        if len(members) < 2:
            empty = np.zeros(0, np.int64)
            return empty, empty, np.zeros(0)
        bands, low = self._arrays()
        extra = np.zeros(len(members), np.int64) if bucket is None else np.asarray(bucket)[members].astype(np.int64)
        ranks = np.zeros(len(members), np.int64) if rank is None else np.asarray(rank)[members].astype(np.int64)
        found: list[np.ndarray] = []
        for band in range(self.bands):
            values = bands[members, band]
            order = np.lexsort((members, ranks, extra, values))
            v, e = values[order], extra[order]
            starts = np.r_[True, (v[1:] != v[:-1]) | (e[1:] != e[:-1])]
            for first, second in candidate_pairs(starts):
                anchors, others = members[order[first]], members[order[second]]
                similarity = estimate_jaccard(low[anchors], low[others])
                keep = similarity >= threshold
                found.append(np.stack([anchors[keep], others[keep], (similarity[keep] * 1e6).astype(np.int64)],
                                      axis=1))  # fmt: skip
        pairs = np.concatenate(found) if found else np.zeros((0, 3), np.int64)
        _, first = np.unique(pairs[:, :2], axis=0, return_index=True)
        pairs = pairs[np.sort(first)]
        return pairs[:, 0], pairs[:, 1], pairs[:, 2] / 1e6


def candidate_pairs(starts: np.ndarray, limit: int = ALL_PAIRS_MAX) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Batches of (earlier, later) positions in a sorted band whose ``starts`` mark its buckets:
    every pair of a bucket of up to ``limit`` members, each later member of a larger bucket
    with that bucket's first."""
    n = len(starts)
    first_of = np.flatnonzero(starts)
    sizes = np.diff(np.r_[first_of, n])
    bucket = np.repeat(np.arange(len(sizes)), sizes)
    position = np.arange(n)
    small = sizes[bucket] <= limit
    large = ~small & ~starts
    if large.any():
        yield first_of[bucket[large]], position[large]
    # in small buckets each member pairs with every later member of its bucket
    partners = np.where(small, first_of[bucket] + sizes[bucket] - position - 1, 0)
    ends = np.cumsum(partners)
    done = 0
    while done < n:  # batches of whole members, about PAIRS_PER_BATCH pairs each
        stop = max(int(np.searchsorted(ends, ends[done] - partners[done] + PAIRS_PER_BATCH, "right")), done + 1)
        counts = partners[done:stop]
        if counts.sum():
            earlier = np.repeat(position[done:stop], counts)
            offset = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
            yield earlier, earlier + 1 + offset
        done = stop


def estimate_jaccard(low_a: np.ndarray, low_b: np.ndarray) -> np.ndarray:
    """Jaccard similarities from rows of low-byte signatures (b-bit MinHash with b = 8).

    Equal low bytes happen for equal MinHash values (probability J) or by chance (1/256 of
    the rest), hence J = (matches - 1/256) / (1 - 1/256).
    """
    matches = np.count_nonzero(low_a == low_b, axis=-1) / low_a.shape[-1]
    return np.maximum(0.0, (matches - 1 / 256) / (1 - 1 / 256))
