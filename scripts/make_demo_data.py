"""Generate the bundled demo sentiment dataset (hfx/resources/demo_sentiment/*.csv).

Short reviews of films, books, restaurants and gadgets, written from templates with a fixed seed. Labels:
positive / negative. Negation flips polarity ("not great" is negative) and in "A, but B" the clause after
"but" decides, so a bag of words alone does not solve it. Usage: python scripts/make_demo_data.py"""

from __future__ import annotations

import csv
import random
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "hfx" / "resources" / "demo_sentiment"

SUBJECTS = {
    "film": ["the film", "this movie", "the plot", "the acting", "the soundtrack", "the ending", "the director's cut",
             "the sequel", "the cast", "the dialogue", "the cinematography", "the script"],
    "book": ["the book", "this novel", "the prose", "the main character", "the final chapter", "the translation",
             "the story", "the author's voice", "the first half", "the memoir"],
    "food": ["the pasta", "the service", "this restaurant", "the dessert", "the coffee", "the waiter", "the menu",
             "the soup", "the pizza", "the staff", "the wine list", "the curry"],
    "gadget": ["the battery", "this phone", "the screen", "the keyboard", "the camera", "the charger",
               "the headphones", "the app", "the laptop", "the speaker", "the update", "the build quality"],
}
POSITIVE = ["great", "wonderful", "excellent", "delightful", "superb", "charming", "brilliant", "solid", "lovely",
            "impressive", "fantastic", "memorable", "reliable", "moving", "fresh", "clever", "generous", "smooth"]
NEGATIVE = ["awful", "terrible", "boring", "disappointing", "dull", "clumsy", "bland", "broken", "tedious",
            "mediocre", "sloppy", "forgettable", "unreliable", "flat", "stale", "annoying", "cheap", "painful"]
INTENSIFIERS = ["", "", "", "really ", "truly ", "quite ", "remarkably ", "surprisingly ", "utterly ", "rather "]
OPENERS = ["", "", "", "honestly, ", "overall, ", "to be fair, ", "in short, ", "i have to say ", "frankly, "]
ENDINGS = [".", ".", ".", "!", " and i would say so again.", ", no doubt about it.", "."]
POS_VERDICTS = ["i would recommend it to anyone", "worth every penny", "i will come back for more",
                "it made my week", "five stars from me", "i keep telling friends about it"]
NEG_VERDICTS = ["i would not recommend it", "a waste of money", "i will not be back",
                "it ruined my evening", "one star from me", "i asked for a refund"]


def clause(rng: random.Random, domain: str, positive: bool) -> str:
    subject = rng.choice(SUBJECTS[domain])
    negate = rng.random() < 0.3
    # With negation, the surface adjective has the opposite polarity of the label.
    adjective = rng.choice(NEGATIVE if positive == negate else POSITIVE)
    verb = rng.choice(["was", "is", "felt", "seemed"])
    if negate:
        return f"{subject} {verb} {rng.choice(['not', 'never', 'hardly'])} {adjective}"
    return f"{subject} {verb} {rng.choice(INTENSIFIERS)}{adjective}"


def review(rng: random.Random, positive: bool) -> str:
    domain = rng.choice(sorted(SUBJECTS))
    kind = rng.random()
    if kind < 0.45:
        text = clause(rng, domain, positive)
    elif kind < 0.75:  # contrast: the clause after "but" carries the verdict
        text = f"{clause(rng, domain, not positive)}, but {clause(rng, domain, positive)}"
    elif kind < 0.9:
        text = f"{clause(rng, domain, positive)} and {clause(rng, domain, positive)}"
    else:
        text = f"{clause(rng, domain, positive)}; {rng.choice(POS_VERDICTS if positive else NEG_VERDICTS)}"
    return (rng.choice(OPENERS) + text + rng.choice(ENDINGS)).capitalize()


def write(path: Path, rows: list[tuple[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        w.writerows(rows)


def main() -> None:
    rng = random.Random(20261130)
    seen: set[str] = set()
    rows: list[tuple[str, str]] = []
    while len(rows) < 2800:
        positive = rng.random() < 0.5
        text = review(rng, positive)
        if text not in seen:  # no review appears in both splits
            seen.add(text)
            rows.append((text, "positive" if positive else "negative"))
    write(OUT / "train.csv", rows[:2400])
    write(OUT / "validation.csv", rows[2400:])
    print(f"wrote {len(rows[:2400])} train and {len(rows[2400:])} validation rows to {OUT}")


if __name__ == "__main__":
    main()
