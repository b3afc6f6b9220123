"""Regenerates examples/data/flights-*.csv, the bundled example data (seeded, reproducible)."""

import csv
import os
import random

WORDS = ("the flight was late again but the crew was kind and the seats were fine "
         "great service smooth landing delayed boarding lost luggage friendly staff "
         "clean cabin cramped legroom tasty snacks no wifi on-time arrival rude agent "
         "Überraschend gut! très bien, café froid… naïve déjà-vu ÉCOLE").split()
CARRIERS = ["AA", "DL", "UA", "WN", "B6", "AS", "NK", "F9"]


def main(out_dir=os.path.join(os.path.dirname(__file__), "data"), files=3, rows=4000, seed=7):
    rng = random.Random(seed)
    os.makedirs(out_dir, exist_ok=True)
    for k in range(files):
        with open(os.path.join(out_dir, f"flights-{k}.csv"), "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["text", "carrier", "flight", "delay_minutes", "distance_km", "cabin_class",
                        "passenger"])
            for _ in range(rows):
                n = rng.randint(3, 25)
                review = " ".join(rng.choices(WORDS, weights=[1 / (i + 1) for i in range(len(WORDS))], k=n))
                delay = round(rng.lognormvariate(2.5, 1.2) - 8, 1)  # heavy tail, some early arrivals
                w.writerow([review.capitalize() + rng.choice([".", "!", "?", ""]),
                            rng.choices(CARRIERS, weights=[8, 7, 6, 5, 3, 2, 1, 1])[0],
                            rng.randint(1, 3000) if rng.random() > 0.3 else rng.randint(1, 50),
                            delay if rng.random() > 0.02 else "",  # 2% not recorded: missing
                            round(rng.uniform(150, 9000), 1),
                            rng.choices([0, 1, 2, 3], weights=[80, 12, 6, 2])[0],
                            f"P{rng.randint(1, 50_000):06d}"])


if __name__ == "__main__":
    main()
