"""Model fixtures for tests and benchmarks: things production code never needs."""

from __future__ import annotations

import json
from pathlib import Path


def write_random_base(folder: Path, size: str = "tiny") -> Path:
    """Write a randomly initialised CLIPSeg base folder (model, tokenizer, image processor).

    For offline tests ("tiny": a few thousand parameters) and timing at the real
    architecture's size ("rd64": the shape of CIDAS/clipseg-rd64-refined, random
    weights). The tokenizer knows only lower-case letters and a few signs.
    """
    from transformers import CLIPImageProcessor, CLIPSegConfig, CLIPSegForImageSegmentation, CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    vocab = {c: i for i, c in enumerate("abcdefghijklmnopqrstuvwxyz/-")}
    vocab.update({f"{c}</w>": len(vocab) + i for i, c in enumerate("abcdefghijklmnopqrstuvwxyz/-")})
    vocab.update({"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1})
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    special = {"bos_token_id": vocab["<|startoftext|>"], "eos_token_id": vocab["<|endoftext|>"],
               "pad_token_id": vocab["<|endoftext|>"]}
    if size == "tiny":
        config = CLIPSegConfig(
            text_config={"vocab_size": len(vocab), "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2,
                         "num_attention_heads": 4, "max_position_embeddings": 32, **special},
            vision_config={"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 3,
                           "num_attention_heads": 4, "image_size": 64, "patch_size": 16},
            projection_dim=16, extract_layers=[0, 1], reduce_dim=16, decoder_num_attention_heads=2,
            decoder_intermediate_size=20)
    elif size == "rd64":
        config = CLIPSegConfig(text_config=special, vision_config={"image_size": 224, "patch_size": 16},
                               extract_layers=[3, 6, 9], reduce_dim=64, use_complex_transposed_convolution=True)
    else:
        raise ValueError(f"size must be 'tiny' or 'rd64', got {size!r}")
    CLIPSegForImageSegmentation(config).save_pretrained(folder)
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), pad_token="<|endoftext|>")
    tokenizer.save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 352}, crop_size=352).save_pretrained(folder)
    return folder
