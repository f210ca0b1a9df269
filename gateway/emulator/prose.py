"""Readable filler text for the emulator: sentences drawn from a small built-in source.

No model runs and nothing is downloaded: the replies are whole English sentences about the
kind of thing the service does, picked and ordered by a seed, so the same prompt always gets
the same text and a demo reads like an answer rather than a word salad.
"""

from __future__ import annotations

import hashlib
import random

SENTENCES = (
    "The volunteer grid splits a large task into many small jobs and runs them in parallel.",
    "Each node picks up a job, works on it for a while, and reports the result back.",
    "A good answer starts with the question itself and keeps the main point in view.",
    "Light from a distant star can take thousands of years to reach the Earth.",
    "Rivers carve their valleys slowly, a little more with every spring flood.",
    "A careful reader checks the sources before trusting a surprising claim.",
    "The simplest explanation that fits every fact is usually the best place to start.",
    "Bread rises because yeast turns sugar into gas that the dough traps in small bubbles.",
    "A bridge carries its load by spreading the weight across its arches and supports.",
    "Most problems become easier once they are split into smaller steps.",
    "The queue is short right now, so the next job should start within a second.",
    "Mountains create their own weather, with clouds gathering on the side facing the wind.",
    "A garden needs patience: the work done in autumn shows its results in spring.",
    "Good tests describe what the code should do rather than how it happens to do it.",
    "The letter arrived a week late, but the news it carried was still welcome.",
    "Bees find their way home by the position of the sun, even on a cloudy day.",
    "Writing things down is the surest way to find out whether they are clear.",
    "The old map showed a road that no longer exists, winding along the coast.",
    "Sound travels faster through water than through air, and faster still through steel.",
    "A steady pace often wins over a rapid start that cannot be kept up.",
    "The library keeps its rarest books in a cool room with the lights turned low.",
    "Every language has words that are hard to translate without a whole sentence.",
    "The result depends on the input, so it is worth checking the input first.",
    "A shared resource works best when everyone takes only what they need.",
    "Winter evenings are long in the north, and summer nights are almost bright.",
    "The recipe asks for three colours of pepper: red, yellow and green.",
    "A small change in the first step can make a large difference at the end.",
    "The network carries each message in pieces and puts them together on arrival.",
    "Owls hunt at night, using hearing so sharp that they can find mice under snow.",
    "A clear question usually gets a clear answer, and a vague one gets a guess.",
    "The train left on time, crossed two rivers, and reached the city before noon.",
    "Numbers tell part of the story, and the people behind them tell the rest.",
)


def sentences(seed: str, words: int) -> str:
    """Exactly ``words`` words of whole sentences (the last one cut and closed with a full
    stop when needed), the same for the same ``seed``."""
    if words <= 0:
        return ""
    rng = random.Random(hashlib.sha256(seed.encode("utf-8", "surrogatepass")).digest())
    order = list(SENTENCES)
    rng.shuffle(order)
    out: list[str] = []
    while len(out) < words:
        for sentence in order:
            out.extend(sentence.split())
            if len(out) >= words:
                break
        rng.shuffle(order)
    out = out[:words]
    if not out[-1].endswith((".", "!", "?")):
        out[-1] = out[-1].rstrip(",:;") + "."
    return " ".join(out)


def whole_sentences(seed: str, count: int) -> str:
    """``count`` whole sentences (at least one), the same for the same ``seed``."""
    rng = random.Random(hashlib.sha256(seed.encode("utf-8", "surrogatepass")).digest())
    return " ".join(rng.sample(SENTENCES, max(1, min(count, len(SENTENCES)))))
