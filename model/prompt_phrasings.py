"""Phrasings users might type, kept apart for choosing and for checking how prompts are resolved.

Three disjoint sets, none of them a configured prompt or one of `model.prompts.REFERENCES`:

- `CALIBRATION`: paraphrases per task and unrelated prompts. Only these choose the
  threshold and margin of `model.prompts` (`python -m model.prompts --report`).
- `TEST`: unseen paraphrases per task; `UNRELATED_TEST`: prompts that must be refused.
  These only measure; nothing is tuned on them. `tests/test_prompts.py` checks them.

Sets are disjoint by `model.prompts.subject` too (what is left once request words
such as "find the" are dropped), since that is what is compared. The test sets were
written before any similarity was computed; one item was replaced afterwards, not
for its score: "show cracks" (its subject is the configured "segment cracks"'s) became
"are there cracks on this wall". Calibration items whose subject repeated a test item
or a configured prompt were rewritten.
"""

from __future__ import annotations

CALIBRATION: dict[str, list[str]] = {
    "crack": [
        "diagonal cracks above the door",
        "find cracks near the window",
        "show cracked plaster",
        "detect fractures",
        "hairline fractures",
        "crack in the drywall",
        "cracking paint",
        "where does the plaster crack",
        "outline the split plaster",
        "broken drywall surface",
        "stress cracks",
        "fissures in the plaster",
        "crack lines",
        "highlight cracks in the paint",
    ],
    "taping": [
        "taping work",
        "find the tape lines",
        "drywall tape strips",
        "tape on the joints",
        "segment joints",
        "show the board seams",
        "where is the joint compound applied",
        "taped drywall",
        "mud and tape",
        "drywall mud",
        "seam tape",
        "outline the taped joints",
        "butt joints",
        "finished drywall joints",
    ],
    "unrelated": [
        "segment tree",
        "find the window frame",
        "segment dog",
        "detect the table",
        "show the roof",
        "segment road",
        "workers on site",
        "segment the chair",
        "highlight the light switch",
        "detect furniture",
        "segment the radiator",
        "find the staircase",
        "segment building",
        "segment grass",
        "show the wall socket",
        "segment hands",
        "find the hammer",
    ],
}

TEST: dict[str, list[str]] = {
    "crack": [
        "find hairline cracks",
        "fractures in the wall",
        "are there cracks on this wall",
        "where is the wall cracked",
        "detect cracking",
        "crack detection",
        "highlight the fissures",
        "mark broken plaster",
        "segment the cracked area",
        "surface cracks in paint",
        "find crazing on the wall",
        "cracked wall",
        "segment fissure",
    ],
    "taping": [
        "mudded joints",
        "show me the drywall tape",
        "find taped seams",
        "joint tape",
        "segment the tape joints",
        "where are the drywall joints",
        "highlight joint compound",
        "taped areas",
        "segment seams",
        "find the mud lines",
        "plasterboard joints",
        "detect drywall taping",
    ],
}

UNRELATED_TEST: list[str] = [
    "segment window",
    "segment person",
    "find the door",
    "segment the floor",
    "detect electrical outlets",
    "show me the ceiling light",
    "segment sky",
    "find the ladder",
    "segment paint bucket",
    "highlight the pipes",
    "segment car",
    "where is the cat",
]
