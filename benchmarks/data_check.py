"""How fast, and in how much memory, ``finjust data check`` streams a large JSONL file.

Writes a synthetic instruction data set (default 1,000,000 records, about 300 MB, with
planted exact duplicates, near-duplicates, PII and test records leaked from training),
then, in one process:

1. the baseline: one bare pass of ``json.loads`` over every line (the floor any checker pays);
2. the check: ``check_data`` with the default model's tokenizer (SmolLM2's, chat template
   applied to every record), MinHash near-duplicates, leakage, conflicts and PII.

It prints wall times, the ratio check / baseline, the resident memory before the check and
its peak (``VmHWM``), and asserts that the planted problems were found.

    python benchmarks/data_check.py                      # 1M records (a few minutes on 2 cores)
    python benchmarks/data_check.py --records 20000      # a quick run
    python benchmarks/data_check.py --no-tokens          # without the tokenizer
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

from common import memory_bytes, reset_peak_memory

from finjust.cli.arguments import positive_int

WORDS = ("kayak tent stove lamp canoe paddle jacket boots rope map tarp mug frame wheel battery motor "
         "saddle brake chain pedal rack light bell lock pump helmet glove basket fender tyre spoke "
         "warranty delivery price colour size weight range charge repair service order return").split()  # fmt: skip
PLANTED_LEAKS = 200


def _sentence(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words)).capitalize()


def _record(rng: random.Random, index: int) -> dict[str, str]:
    return {
        "instruction": f"Question {index}: {_sentence(rng, 10)}?",
        "input": "",
        "output": f"{_sentence(rng, 28)}. Ride on!",
        "topic": rng.choice(WORDS),
    }


def write_data(folder: Path, records: int, seed: int = 0) -> tuple[Path, Path, int]:
    """A training file with planted problems, a test file of which up to PLANTED_LEAKS records
    leak (one per 997 training records), and how many it planted."""
    rng = random.Random(seed)
    train, test = folder / "train.jsonl", folder / "test.jsonl"
    leaked: list[dict[str, str]] = []
    with train.open("w", encoding="utf-8") as out:
        previous = _record(rng, 0)
        for index in range(records):
            record = _record(rng, index)
            roll = rng.random()
            if roll < 0.01:  # an exact duplicate of the previous record
                record = dict(previous)
            elif roll < 0.02:  # a near-duplicate: the previous record with one more word
                record = {**previous, "output": previous["output"] + " Thanks"}
            elif roll < 0.025:
                record["output"] += f" Mail support{index}@nordhavn.example or call +46 31 390 {index % 10000:04d}."
            if len(leaked) < PLANTED_LEAKS and index % 997 == 0:
                leaked.append({**record, "output": "A different answer."})
            out.write(json.dumps(record) + "\n")
            previous = record
    with test.open("w", encoding="utf-8") as out:
        for index in range(1000 - len(leaked)):
            out.write(json.dumps(_record(rng, records + index)) + "\n")
        for record in leaked:
            out.write(json.dumps(record) + "\n")
    return train, test, len(leaked)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=positive_int, default=1_000_000)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--no-tokens", action="store_true")
    args = parser.parse_args()

    from finjust.data.check import check_data
    from finjust.recipe import data_section_from_dict

    tokenizer = None
    if not args.no_tokens:
        from finjust.models.load import load_tokenizer, resolve_model_folder

        tokenizer = load_tokenizer(resolve_model_folder(args.model))
    with tempfile.TemporaryDirectory(prefix="finjust-bench-") as tmp:
        started = time.perf_counter()
        train, test, planted = write_data(Path(tmp), args.records)
        size_mb = train.stat().st_size / 1e6
        print(f"wrote {args.records:,} records, {size_mb:.0f} MB, in {time.perf_counter() - started:.0f} s")

        started = time.perf_counter()
        with train.open("rb") as handle:
            for line in handle:
                json.loads(line)
        baseline = time.perf_counter() - started
        print(f"baseline: json.loads over every line: {baseline:.1f} s")

        data = data_section_from_dict({"train": str(train), "test": str(test), "validation_fraction": 0.01})
        reset_peak_memory()  # the peak from here: writing the data is not the check's
        before = memory_bytes("VmRSS") / 1e6
        started = time.perf_counter()
        report = check_data(data, 42, tokenizer, tokenizer_name=None if args.no_tokens else args.model)
        seconds = time.perf_counter() - started
        peak = memory_bytes("VmHWM") / 1e6

    counts = {name: finding.count for name, finding in report.findings.items()}
    print(f"check: {seconds:.0f} s ({args.records / seconds:,.0f} records/s), {seconds / baseline:.1f}x the baseline")
    print(f"memory: {before:.0f} MB resident before the check (imports, tokenizer), peak {peak:.0f} MB "
          f"(+{peak - before:.0f} MB, {1e6 * (peak - before) / args.records:.0f} bytes a record)")  # fmt: skip
    print(f"findings: {counts}")
    # a count, not each planted leak: one whose training copy fell into validation is no train/test leak
    assert counts["leakage"] >= planted, counts
    assert counts["duplicates"] > 0 and counts["near_duplicates"] > 0 and counts["pii"] > 0, counts


if __name__ == "__main__":
    main()
