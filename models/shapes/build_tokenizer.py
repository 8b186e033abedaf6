"""Rebuild CLIP's BPE tokenizer files (vocab.json, merges.txt) from ``bpe_simple_vocab_16e6.txt.gz``.

CLIP's vocabulary is derived from its merges file:

* the 256 byte-level characters of ``bytes_to_unicode`` (in that order),
* the same characters followed by ``</w>``,
* one token per merge (the two halves joined), for the first 49152 - 256 - 2 merges,
* ``<|startoftext|>`` and ``<|endoftext|>``,

which gives 49,408 tokens. The gz file ships inside the open-clip-torch wheel; pass either the gz
file or the wheel::

    python -m models.shapes.build_tokenizer --source open_clip_torch-3.3.0-py3-none-any.whl
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import zipfile
from pathlib import Path

GZ_NAME = "open_clip/bpe_simple_vocab_16e6.txt.gz"
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "tiny-shapes-sd" / "tokenizer"
VOCAB_SIZE = 49408
BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def bytes_to_unicode() -> dict[int, str]:
    """Map every byte to a printable unicode character, as byte-level BPE does."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs), strict=True))


def read_merges_text(source: Path) -> str:
    if source.suffix == ".whl" or zipfile.is_zipfile(source):
        with zipfile.ZipFile(source) as zf:
            raw = zf.read(GZ_NAME)
        return gzip.GzipFile(fileobj=io.BytesIO(raw)).read().decode("utf-8")
    return gzip.open(source, "rt", encoding="utf-8").read()


def build_vocab(text: str) -> tuple[dict[str, int], list[str]]:
    lines = text.split("\n")
    merges = lines[1 : 49152 - 256 - 2 + 1]
    chars = list(bytes_to_unicode().values())
    tokens = chars + [c + "</w>" for c in chars]
    tokens += ["".join(m.split()) for m in merges]
    tokens += [BOS, EOS]
    vocab = {t: i for i, t in enumerate(tokens)}
    assert len(vocab) == VOCAB_SIZE, len(vocab)
    return vocab, merges


def write_tokenizer(source: Path, out: Path = DEFAULT_OUT) -> Path:
    vocab, merges = build_vocab(read_merges_text(source))
    out.mkdir(parents=True, exist_ok=True)
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    special = {"bos_token": BOS, "eos_token": EOS, "unk_token": EOS, "pad_token": EOS}
    (out / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": 77,
        "do_lower_case": True,
        "add_prefix_space": False,
        "errors": "replace",
        "clean_up_tokenization_spaces": False,
        **special,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", type=Path, required=True, help="bpe_simple_vocab_16e6.txt.gz or the open-clip wheel")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args()
    out = write_tokenizer(args.source, args.out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
