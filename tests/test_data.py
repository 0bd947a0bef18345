"""Data: files as bytes, the 90/10 split, windows and batches as pure functions, loaders, recall episodes, errors."""

from __future__ import annotations

import random
import string

import pytest
import torch

from hope.data.corpus import VAL_FRACTION, Corpus, DataError, load_bytes, load_corpus, synthetic_corpus
from hope.data.loader import make_loader, sample_batch
from hope.data.recall import (
    CLOSE,
    KEY_ALPHABET,
    KEY_LEN,
    OPEN,
    SEP,
    VALUE_ALPHABET,
    VALUE_LEN,
    RecallEpisode,
    chance_level,
    episode_overhead,
    make_episode,
    training_row,
)

PRINTABLE = set(string.printable.encode())  # letters, digits, punctuation, whitespace


def _random_bytes(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n,), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def _is_subsequence(needle: torch.Tensor, haystack: torch.Tensor) -> bool:
    """True when `needle` occurs as a contiguous window of `haystack`."""
    n = len(needle)
    if n == 0:
        return True
    windows = haystack.long().unfold(0, n, 1)  # (N - n + 1, n)
    return bool((windows == needle.long()).all(dim=1).any())


# ----------------------------------------------------------------------------- files


def test_load_bytes_reads_any_file_exactly(tmp_path):
    binary = bytes(range(256)) * 3 + b"\xff\xfe\x00"
    path = tmp_path / "blob.bin"
    path.write_bytes(binary)
    data = load_bytes(path)
    assert data.dtype == torch.uint8 and data.shape == (len(binary),)
    assert bytes(data.tolist()) == binary
    text = tmp_path / "t.txt"
    text.write_text("héllo\nworld\n", encoding="utf-8")
    assert bytes(load_bytes(str(text)).tolist()) == "héllo\nworld\n".encode("utf-8")


@pytest.mark.parametrize("kind, fragment", [
    ("missing", "data file not found"),
    ("directory", "names no file"),  # an empty directory: a collection of no documents
    ("empty", "data file is empty"),
])
def test_bad_data_files_raise_data_error(tmp_path, kind, fragment):
    path = tmp_path / "corpus.txt"
    if kind == "directory":
        path.mkdir()
    elif kind == "empty":
        path.write_bytes(b"")
    with pytest.raises(DataError) as err:
        load_corpus(path)
    message = str(err.value)
    assert fragment in message and str(path) in message and "\n" not in message


def test_missing_file_message_says_what_to_do(tmp_path):
    with pytest.raises(DataError, match="hope-prepare-data"):
        load_bytes(tmp_path / "nope.txt")


def test_too_short_file_names_the_split_and_the_fix(tmp_path):
    path = tmp_path / "short.txt"
    path.write_bytes(b"x" * 100)  # 90 train, 10 validation bytes
    corpus = load_corpus(path)
    corpus.check_length(10)  # exactly one window in each split is enough
    with pytest.raises(DataError) as err:
        corpus.check_length(64 + 1)
    message = str(err.value)
    assert str(path) in message and "validation split has 10 bytes" in message
    assert "seq_len + 1 = 65" in message and "--seq_len" in message and "\n" not in message
    with pytest.raises(DataError, match="the train split has 90 bytes, fewer than seq_len \\+ 1 = 91"):
        corpus.check_length(91)
    with pytest.raises(DataError, match="validation split has 10 bytes"):
        corpus.check_length(11)


# ----------------------------------------------------------------------------- corpus and split


@pytest.mark.parametrize("n", [1, 9, 10, 11, 99, 1000, 12_345])
def test_split_is_first_90_percent_train(n):
    data = _random_bytes(n, seed=n)
    corpus = Corpus.from_bytes(data, name="x")
    assert len(corpus.train) == (n * 9) // 10 == int(n * (1 - VAL_FRACTION))
    assert torch.equal(torch.cat([corpus.train, corpus.val]), data)
    assert torch.equal(corpus.train, data[: len(corpus.train)])
    again = Corpus.from_bytes(data.clone(), name="x")
    assert torch.equal(again.train, corpus.train) and torch.equal(again.val, corpus.val)


def test_synthetic_corpus_is_deterministic_and_text_like():
    a = synthetic_corpus(50_000, seed=3)
    assert a.dtype == torch.uint8 and a.shape == (50_000,)
    assert torch.equal(a, synthetic_corpus(50_000, seed=3))
    assert not torch.equal(a, synthetic_corpus(50_000, seed=4))
    values = set(a.tolist())
    assert len(values) > 20, f"only {len(values)} distinct bytes"
    assert values <= PRINTABLE, f"non-printable bytes {sorted(values - PRINTABLE)}"
    assert {ord(" "), ord("\n"), ord(".")} <= values
    assert a.tolist().count(ord(" ")) > 1000  # words, not one blob
    # not trivially repetitive: many distinct 8-byte windows
    windows = {bytes(a[i:i + 8].tolist()) for i in range(0, 20_000, 7)}
    assert len(windows) > 1000


def test_no_data_path_is_the_synthetic_corpus():
    corpus = load_corpus(None, seed=5)
    full = torch.cat([corpus.train, corpus.val])
    assert torch.equal(full, synthetic_corpus(seed=5))
    assert "synthetic" in corpus.name
    corpus.check_length(1025)


# ----------------------------------------------------------------------------- batches


def test_sample_batch_rows_are_real_shifted_windows():
    data = _random_bytes(3000, seed=1)
    x, y = sample_batch(data, batch_size=16, seq_len=32, seed=0, index=4)
    assert x.shape == y.shape == (16, 32) and x.dtype == y.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])  # y is x shifted by one byte
    rows = torch.cat([x, y[:, -1:]], dim=1)  # (B, T+1)
    for row in rows:
        assert _is_subsequence(row, data), "a row is not a window of the data"


def test_sample_batch_reaches_both_ends_of_the_data():
    data = torch.arange(0, 40, dtype=torch.uint8)  # every window is identified by its first byte
    firsts = set()
    for index in range(200):
        x, y = sample_batch(data, batch_size=8, seq_len=8, seed=1, index=index)
        assert torch.equal(y - x, torch.ones_like(x))
        firsts.update(x[:, 0].tolist())
    assert firsts == set(range(0, 40 - 8)), "not every window start is sampled"
    only = torch.arange(0, 9, dtype=torch.uint8)  # exactly seq_len + 1 bytes: one window
    x, y = sample_batch(only, batch_size=3, seq_len=8, seed=0)
    assert x.tolist() == [list(range(8))] * 3 and y.tolist() == [list(range(1, 9))] * 3


def test_batches_are_a_pure_function_of_seed_index_rank():
    data = _random_bytes(5000, seed=2)

    def batch(seed, index, rank):
        return sample_batch(data, 4, 16, seed=seed, index=index, rank=rank)

    ref = batch(7, 3, 0)
    torch.manual_seed(123)  # the global RNG plays no part
    again = batch(7, 3, 0)
    assert torch.equal(ref[0], again[0]) and torch.equal(ref[1], again[1])
    others = [batch(7, 4, 0), batch(8, 3, 0), batch(7, 3, 1), batch(7, 3, 2)]
    for other in others:
        assert not torch.equal(ref[0], other[0])
    # ranks differ from each other at every index, not just from rank 0
    for index in range(5):
        r = [batch(7, index, rank)[0] for rank in range(4)]
        assert all(not torch.equal(r[i], r[j]) for i in range(4) for j in range(i + 1, 4))


def test_recall_fraction_mixes_in_episodes_of_the_same_length():
    data = synthetic_corpus(20_000, seed=0)
    x, y = sample_batch(data, batch_size=8, seq_len=64, seed=0, index=0, recall_fraction=1.0)
    rows = torch.cat([x, y[:, -1:]], dim=1)
    assert rows.shape == (8, 65)
    for row in rows.tolist():
        # every row ends with a query: OPEN key SEP value
        assert row[-(KEY_LEN + VALUE_LEN + 2)] == OPEN and row[-(VALUE_LEN + 1)] == SEP
        assert row.count(OPEN) == 2 and row.count(CLOSE) == 1
    x2, _ = sample_batch(data, batch_size=8, seq_len=64, seed=0, index=0, recall_fraction=1.0)
    assert torch.equal(x, x2)
    plain, _ = sample_batch(data, batch_size=8, seq_len=64, seed=0, index=0, recall_fraction=0.0)
    assert not bool((plain == OPEN).any())


def _parse_scattered(row: list[int]) -> tuple[dict[bytes, tuple[int, bytes]], list[tuple[int, bytes, bytes]]]:
    """Writes (key -> (position, value)) and queries (position, key, value) of a scattered row."""
    writes, queries = {}, []
    for i, b in enumerate(row):
        if b != OPEN:
            continue
        key = bytes(row[i + 1:i + 1 + KEY_LEN])
        assert row[i + 1 + KEY_LEN] == SEP
        value = bytes(row[i + 2 + KEY_LEN:i + 2 + KEY_LEN + VALUE_LEN])
        closed = i + 2 + KEY_LEN + VALUE_LEN < len(row) and row[i + 2 + KEY_LEN + VALUE_LEN] == CLOSE
        if closed:
            assert key not in writes, "keys are distinct within a row"
            writes[key] = (i, value)
        else:
            queries.append((i, key, value))
    return writes, queries


def test_scattered_rows_ask_every_written_pair_once_after_its_write():
    data = synthetic_corpus(20_000, seed=0)
    gaps = []
    for seed in range(40):
        row = training_row(random.Random(seed), 129, data, episodes=4).tolist()
        assert len(row) == 129
        writes, queries = _parse_scattered(row)
        assert len(writes) == 4 and sorted(k for _, k, _ in queries) == sorted(writes)
        for pos, key, value in queries:
            wpos, wvalue = writes[key]
            assert wpos < pos and wvalue == value  # the answer is the value written earlier under that key
            gaps.append(pos - wpos)
        # the text between the episodes is one contiguous span of the corpus, in order
        text = bytes(b for b in row if b not in (OPEN, SEP, CLOSE))
        assert len(text) >= 129 - 4 * episode_overhead()
    # the queries are not pinned to the row's end and the gaps spread over the row
    assert min(gaps) < 20 and max(gaps) > 80
    assert training_row(random.Random(3), 129, data, 4).tolist() == training_row(random.Random(3), 129, data, 4).tolist()


def test_scattered_rows_use_fewer_episodes_when_they_do_not_fit():
    data = synthetic_corpus(5_000, seed=0)
    row = training_row(random.Random(0), 3 * episode_overhead() + 2, data, episodes=10).tolist()
    writes, queries = _parse_scattered(row)
    assert len(writes) == len(queries) == 3
    # one episode keeps the layout hope-eval-long scores: the query's value ends the row
    one = training_row(random.Random(0), 65, data, episodes=1).tolist()
    assert one[-(VALUE_LEN + 1)] == SEP and one.count(OPEN) == 2


def test_recall_episodes_reach_the_batches():
    data = synthetic_corpus(20_000, seed=0)
    x, y = sample_batch(data, batch_size=4, seq_len=128, seed=0, index=0, recall_fraction=1.0, recall_episodes=3)
    for row in torch.cat([x, y[:, -1:]], dim=1).tolist():
        writes, queries = _parse_scattered(row)
        assert len(writes) == len(queries) == 3


# ----------------------------------------------------------------------------- loaders


def _collect(loader) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x.clone(), y.clone()) for x, y in loader]


def test_loader_with_workers_gives_the_same_batch_sequence():
    data = _random_bytes(4000, seed=3)
    kwargs = dict(batch_size=4, seq_len=16, seed=11, start=3, stop=10)  # 7 batches: uneven across 2 workers
    serial = _collect(make_loader(data, **kwargs, num_workers=0))
    parallel = _collect(make_loader(data, **kwargs, num_workers=2, prefetch_factor=3))
    assert len(serial) == len(parallel) == 7
    for index, ((xs, ys), (xp, yp)) in enumerate(zip(serial, parallel), start=3):
        expected = sample_batch(data, 4, 16, seed=11, index=index)
        assert torch.equal(xs, expected[0]) and torch.equal(ys, expected[1])
        assert torch.equal(xs, xp) and torch.equal(ys, yp)


def test_resumed_loader_continues_the_same_sequence():
    data = _random_bytes(4000, seed=4)
    full = _collect(make_loader(data, 2, 8, seed=0, start=0, stop=8))
    resumed = _collect(make_loader(data, 2, 8, seed=0, start=5, stop=8))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(full[5:], resumed))
    other_rank = _collect(make_loader(data, 2, 8, seed=0, start=0, stop=8, rank=1))
    assert all(not torch.equal(a[0], b[0]) for a, b in zip(full, other_rank))


def test_loader_honours_its_options():
    data = _random_bytes(1000, seed=5)
    loader = make_loader(data, 2, 8, seed=0, start=0, stop=4, num_workers=2, pin_memory=True, prefetch_factor=5)
    assert loader.num_workers == 2 and loader.pin_memory is True and loader.prefetch_factor == 5
    serial = make_loader(data, 2, 8, seed=0, start=0, stop=4, num_workers=0, prefetch_factor=5)
    assert serial.num_workers == 0 and serial.pin_memory is False
    assert serial.prefetch_factor is None  # only meaningful with workers (DataLoader rejects it otherwise)
    assert len(_collect(serial)) == 4


# ----------------------------------------------------------------------------- recall episodes


def _filler_text() -> torch.Tensor:
    return synthetic_corpus(5000, seed=9)


@pytest.mark.parametrize("gap, prefix", [(0, 0), (1, 0), (37, 5), (300, 12)])
def test_episode_layout_matches_the_module_docstring(gap, prefix):
    filler = _filler_text()
    ep = make_episode(random.Random(gap), gap, filler, prefix=prefix)
    assert isinstance(ep, RecallEpisode) and ep.gap == gap
    t = ep.tokens.tolist()
    assert ep.tokens.dtype == torch.int64
    assert len(t) == prefix + gap + episode_overhead()
    # ... filler ... OPEN KEY SEP VALUE CLOSE <gap filler> OPEN KEY SEP VALUE
    w = prefix
    assert t[w] == OPEN
    key = t[w + 1:w + 1 + KEY_LEN]
    assert t[w + 1 + KEY_LEN] == SEP
    value = t[w + 2 + KEY_LEN:w + 2 + KEY_LEN + VALUE_LEN]
    close = w + 2 + KEY_LEN + VALUE_LEN
    assert t[close] == CLOSE
    query = close + 1 + gap
    assert t[query] == OPEN, "the query must start exactly `gap` bytes after the write's CLOSE"
    assert t[query + 1:query + 1 + KEY_LEN] == key and t[query + 1 + KEY_LEN] == SEP
    assert t[query + 2 + KEY_LEN:] == value
    assert ep.value_start == query + 2 + KEY_LEN == len(t) - VALUE_LEN
    assert t[ep.value_start:] == value
    assert all(k in KEY_ALPHABET for k in key) and all(v in VALUE_ALPHABET for v in value)
    # the filler is real text: no control bytes, and each filler stretch is a window of the source
    gap_bytes, prefix_bytes = ep.tokens[close + 1:query], ep.tokens[:prefix]
    assert len(gap_bytes) == gap
    assert not any(b in (OPEN, SEP, CLOSE) for b in gap_bytes.tolist() + prefix_bytes.tolist())
    assert _is_subsequence(gap_bytes, filler) and _is_subsequence(prefix_bytes, filler)


def test_episodes_are_reproducible_from_the_rng_seed():
    filler = _filler_text()
    a = [make_episode(random.Random(42), 50, filler, prefix=3) for _ in range(2)]
    assert torch.equal(a[0].tokens, a[1].tokens) and a[0].value_start == a[1].value_start
    rng1, rng2 = random.Random(1), random.Random(1)
    seq1 = [make_episode(rng1, 20, filler).tokens for _ in range(5)]
    seq2 = [make_episode(rng2, 20, filler).tokens for _ in range(5)]
    assert all(torch.equal(p, q) for p, q in zip(seq1, seq2))
    assert len({bytes(t.tolist()) for t in seq1}) > 1  # successive episodes differ
    other = make_episode(random.Random(2), 50, filler, prefix=3)
    assert not torch.equal(a[0].tokens, other.tokens)


def test_short_filler_is_repeated():
    filler = torch.tensor(list(b"ab"), dtype=torch.uint8)
    ep = make_episode(random.Random(0), 7, filler, prefix=3)
    assert ep.tokens[:3].tolist() == list(b"aba")
    close = 3 + 2 + KEY_LEN + VALUE_LEN
    assert ep.tokens[close + 1:close + 8].tolist() == list(b"abababa")


@pytest.mark.parametrize("length", [1, 5, 16, 17, 18, 65, 129, 2049])
def test_training_row_has_exactly_the_requested_length(length):
    filler = _filler_text()
    for seed in range(5):
        row = training_row(random.Random(seed), length, filler)
        assert row.shape == (length,) and row.dtype == torch.int64
        if length >= episode_overhead():
            t = row.tolist()
            assert t[-(KEY_LEN + VALUE_LEN + 2)] == OPEN and t.count(OPEN) == 2 and t.count(CLOSE) == 1
        else:  # too short for an episode: plain filler
            assert not any(b in (OPEN, SEP, CLOSE) for b in row.tolist())
    assert torch.equal(training_row(random.Random(3), length, filler), training_row(random.Random(3), length, filler))


def test_chance_level_and_overhead():
    assert chance_level() == pytest.approx(10.0 ** -VALUE_LEN)
    assert chance_level(3) == pytest.approx(1e-3)
    assert episode_overhead() == len(make_episode(random.Random(0), 0, _filler_text()).tokens)
    assert episode_overhead(key_len=1, value_len=1) == 2 * 3 + 2 + 1
