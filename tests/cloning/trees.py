"""Hand-built search trees for the cloning tests (no search involved).

0  problem: Alice has some apples; with 3 more she has 7. How many does she have?
├── 0.0  Let x be the number of apples Alice has.            q=0.95
│   ├── 0.0.0  Then x - 3 = 7, so x = 10.                     wrong, answer 10
│   └── 0.0.1  Then x + 3 = 7.                                q=0.92
│       ├── 0.0.1.0  So x = 4, the answer is $\\boxed{4}$.    correct, answer 4
│       └── 0.0.1.1  So x = 3.                                wrong, answer 3
├── 0.1  Alice ends with 7 apples after getting 3 more.       q=0.4
│   ├── 0.1.0  So she has 7 * 3 = 21.                         wrong, answer 21
│   └── 0.1.1  (rollout, two paragraphs) ... \\boxed{4}        correct, answer 4
├── 0.2  The answer is 10.                                    wrong, answer "10 " (= 0.0.0)
└── 0.3  Perhaps we should draw a picture.                    not terminal
"""

from __future__ import annotations

from astro_core.trees import SearchTree, TreeNode

PROBLEM = "Alice has some apples; with 3 more she has 7. How many does she have?"


def node(node_id: str, text: str, **fields: object) -> TreeNode:
    parent = node_id.rsplit(".", 1)[0] if "." in node_id else None
    return TreeNode(node_id, parent, node_id.count("."), text, **fields)  # type: ignore[arg-type]


def apples_tree(problem_id: str = "apples") -> SearchTree:
    return SearchTree(
        problem_id=problem_id,
        problem=PROBLEM,
        gold="4",
        nodes=[
            node("0", "", visits=20, q=0.5),
            node("0.0", "Let x be the number of apples Alice has.", q=0.95, visits=10),
            node("0.0.0", "Then x - 3 = 7, so x = 10.", terminal=True, answer="10", correct=False),
            node("0.0.1", "Then x + 3 = 7.", q=0.92, visits=6),
            node(
                "0.0.1.0",
                "So x = 4, the answer is $\\boxed{4}$.",
                q=1.0,
                terminal=True,
                answer="4",
                correct=True,
            ),
            node("0.0.1.1", "So x = 3.", q=-1.0, terminal=True, answer="3", correct=False),
            node("0.1", "Alice ends with 7 apples after getting 3 more.", q=0.4, visits=5),
            node("0.1.0", "So she has 7 * 3 = 21.", terminal=True, answer="21", correct=False),
            node(
                "0.1.1",
                "She had 7 - 3 apples before.\n\nThat is $\\boxed{4}$.",
                kind="rollout",
                q=1.0,
                terminal=True,
                answer="4",
                correct=True,
            ),
            node("0.2", "The answer is 10.", q=-1, terminal=True, answer="10 ", correct=False),
            node("0.3", "Perhaps we should draw a picture.", q=0.1),
        ],
    )


def hopeless_tree(problem_id: str = "hopeless") -> SearchTree:
    """Only wrong terminals: cloning must skip it."""
    return SearchTree(
        problem_id=problem_id,
        problem="What is 2 + 2?",
        gold="4",
        nodes=[
            node("0", ""),
            node("0.0", "2 + 2 = 5.", terminal=True, answer="5", correct=False),
            node("0.1", "2 + 2 = 22.", terminal=True, answer="22", correct=False),
        ],
    )


def lucky_tree(problem_id: str = "lucky") -> SearchTree:
    """Only a correct terminal: no search traces, only direct ones."""
    return SearchTree(
        problem_id=problem_id,
        problem="What is 3 + 3?",
        gold="6",
        nodes=[node("0", ""), node("0.0", "3 + 3 = 6.", terminal=True, answer="6", correct=True)],
    )


def random_tree(seed: int, max_depth: int = 4, branching: int = 3) -> SearchTree:
    """A random tree with wrong and correct terminals (answers 1..6, gold 4), for invariants."""
    import random

    rng = random.Random(seed)
    nodes = [node("0", "", q=0.0)]

    def grow(parent: str, depth: int) -> None:
        for index in range(rng.randint(1, branching)):
            node_id = f"{parent}.{index}"
            q = round(rng.uniform(-1, 1), 2)
            stop = depth + 1 >= max_depth or rng.random() < 0.25 + 0.15 * depth
            if stop and rng.random() < 0.9:
                answer = str(rng.randint(1, 6))
                text = f"Step {node_id}: conclude {answer}."
                nodes.append(
                    node(node_id, text, q=q, terminal=True, answer=answer, correct=answer == "4")
                )
            elif stop:
                nodes.append(node(node_id, f"Step {node_id}: stuck.", q=q))
            else:
                nodes.append(node(node_id, f"Step {node_id}: reason about it.", q=q))
                grow(node_id, depth + 1)

    grow("0", 0)
    return SearchTree(f"random-{seed}", f"Random problem {seed}", "4", nodes)
