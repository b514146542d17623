"""A small built-in set of texts, written for this project, to measure language models on.

Varied registers (prose, dialogue, code, lists, numbers) so that attention heads have something to do;
repeated names and phrases give induction heads a chance to show. No dataset is downloaded.
"""

__all__ = ["BUILTIN_TEXTS"]

BUILTIN_TEXTS: list[str] = [
    "The lighthouse keeper climbed the spiral stairs every evening at dusk. He counted the steps as he went, "
    "one hundred and twelve of them, and at the top he lit the lamp and watched the beam sweep across the "
    "grey water. The lighthouse keeper had done this for thirty years.",
    "Maria Okafor opened the letter from the museum. The museum wanted to borrow her grandmother's quilt for "
    "an exhibition on textiles of the coast. Maria Okafor read the letter twice, then called her brother.",
    "def moving_average(values, window):\n    total = 0.0\n    out = []\n    for i, v in enumerate(values):\n"
    "        total += v\n        if i >= window:\n            total -= values[i - window]\n"
    "        out.append(total / min(i + 1, window))\n    return out\n",
    "Ingredients: two cups of flour, one teaspoon of salt, three eggs, one cup of milk. Whisk the eggs and "
    "the milk, then fold in the flour and the salt. Rest the batter for ten minutes before frying.",
    "Q: What is the capital of the region where the river meets the sea?\nA: The old port town of Halvik, "
    "which has been the capital since the bridge was built.\nQ: When was the bridge built?\nA: In 1872.",
    "In 1905 Albert Einstein published four papers that changed physics. The first explained the "
    "photoelectric effect, the second Brownian motion, the third special relativity, and the fourth showed "
    "that mass and energy are equivalent.",
    "The committee met on Tuesday. The committee agreed that the budget for the library would rise by four "
    "percent, that the reading room would open on Sundays, and that the committee would meet again in May.",
    "Temperatures fell below freezing overnight across the northern valleys, and forecasters expect snow on "
    "high ground by Thursday. Drivers are advised to check conditions before setting out.",
    'She said, "I will not go back to the city." He said, "Then we will stay here, by the orchard, and '
    'see what the spring brings." She said nothing more, and they walked on through the orchard.',
    "A transformer layer mixes information between positions with attention and then transforms each "
    "position with a small network. Stacking layers lets the model compose simple patterns into complex ones.",
    "1, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233, 377, 610, 987. Each number is the sum of the two numbers "
    "before it. 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024. Each number is twice the number before it.",
    "The cat sat on the mat. The dog sat on the rug. The cat looked at the dog, and the dog looked at the "
    "cat, and neither of them moved from the mat or the rug until the door opened.",
    "Chapter One. The village of Brackenford lay in a fold of the hills, where two streams joined. Nobody in "
    "Brackenford remembered a winter as hard as the one that began the year the miller's son came home.",
    "To install the package, run the installer and follow the prompts. If the installer reports a missing "
    "library, install the library first and run the installer again.",
    "Gradient descent moves the parameters a small step against the gradient of the loss. With a learning "
    "rate that is too large the loss diverges; with one that is too small training takes forever.",
    "Monday: markets. Tuesday: library. Wednesday: swimming. Thursday: markets. Friday: library. Saturday: "
    "swimming. Sunday: rest. Monday: markets. Tuesday: library.",
]
