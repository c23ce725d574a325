"""ASTRO's Monte Carlo Tree Search over reasoning steps, for many trees at once.

A node is one reasoning step; its prompt is the chat prompt plus the steps on its path, each
followed by the step delimiter. One round of `MCTS.step(trees)` advances every tree by up to
`parallel_selections` iterations and sends all trees' work through the same calls:

1. select   - in each tree, walk down by PUCT  Q + c * P * sqrt(N(s)) / (1 + N(s,a))  to a
              leaf; pending selections add virtual loss, and a leaf already selected this
              round is closed to the next selections, so they end at distinct leaves.
2. expand   - ONE generate call for every selected leaf of every tree (n=k, stop=delimiter,
              each prompt's budget capped by what its solution has left). P(a|s) is the
              softmax of the k steps' log-probabilities (normalised over siblings).
3. value    - ONE generate call for every new non-terminal child (n=M) that runs each to the
              end of a solution, each prompt with its own remaining solution budget.
              Rollouts are kept as chains of `rollout` nodes.
4. verify   - ONE verify_batch for every terminal met in 2 and 3 (reward 1 correct, 0 not).
              A child's rollout value is the mean of its M rollout scores.
5. back up  - write the new nodes and, along each selected path, N += 1 and
              Q(s) = (sum_children Q*N + own rollout value) / (sum_children N + 1): one atomic
              commit per tree in the store.

A step is terminal when it holds a final answer, ended with the model's end-of-sequence
(the model considers the solution finished), sits at max_depth, or brings the solution to
max_solution_tokens. A fresh root is valued by M rollouts in its first round, which also
gives cloning a set of direct solutions. New children start with N=1 (their valuation).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from astro_core.problems import Problem
from astro_core.prompts import ChatTemplate, continuation_prompt, problem_messages
from astro_core.protocols import Completion, Generator, RewardMapping, Verifier, VerifyItem
from astro_core.search.answers import final_answer
from astro_core.search.config import SearchConfig
from astro_core.search.store import StoredNode, TreeHeader, TreeStore, id_order
from astro_core.trees import ROOT_ID, SearchTree, TreeNode

SEARCH_REWARDS = RewardMapping(correct=1.0, incorrect=0.0)


class GeneratorReplyError(ValueError):
    """A generator reply that breaks the Generator Protocol; retrying it cannot help."""


def sibling_priors(logprobs: Sequence[float]) -> list[float]:
    """Softmax of the siblings' step log-probabilities: P(a|s) normalised over siblings.

    -inf (a step the model gives no probability) gets prior 0, and all -inf gives uniform
    priors; NaN or +inf is no log-probability at all and is refused (it would make every
    PUCT score NaN, and no child could be selected)."""
    if any(math.isnan(lp) or lp == math.inf for lp in logprobs):
        raise GeneratorReplyError(f"generator returned a step log-probability of {logprobs}")
    top = max(logprobs)
    if top == -math.inf:
        return [1.0 / len(logprobs)] * len(logprobs)
    weights = [math.exp(lp - top) for lp in logprobs]
    total = sum(weights)
    return [w / total for w in weights]


def check_reply(completions: Sequence[Completion], prompts: int, n: int) -> None:
    """Refuse a reply that is not n completions per prompt, in prompt order (the Generator
    Protocol): the search reads them by position, and would silently give one prompt's
    steps to another, or value a node with fewer than M rollouts."""
    if len(completions) != prompts * n:
        raise GeneratorReplyError(
            f"generator returned {len(completions)} completions for {prompts} prompts x n={n}"
        )
    for position, completion in enumerate(completions):
        if completion.prompt_index != position // n:
            raise GeneratorReplyError(
                f"generator returned completion {position} for prompt "
                f"{completion.prompt_index}, expected {position // n}"
            )
        if not isinstance(completion.text, str) or completion.num_tokens < 0:
            raise GeneratorReplyError(
                f"generator returned completion {position} with text "
                f"{type(completion.text).__name__} and {completion.num_tokens} tokens"
            )


def puct(q: float, prior: float, parent_visits: float, visits: float, c_puct: float) -> float:
    return q + c_puct * prior * math.sqrt(parent_visits) / (1 + visits)


@dataclass
class TreeSearch:
    """One problem's tree in memory; the store holds the same nodes and is the truth."""

    key: str
    problem: Problem
    chat_prompt: str
    nodes: dict[str, TreeNode] = field(default_factory=dict)
    tokens: dict[str, int] = field(default_factory=dict)
    kids: dict[str, list[str]] = field(default_factory=dict)  # step children only
    child_count: dict[str, int] = field(default_factory=dict)  # all children (next index)
    pending: dict[str, int] = field(default_factory=dict)  # virtual loss per node this round
    closed: set[str] = field(default_factory=set)  # this round: leaves taken, subtrees full
    generator_calls: int = 0

    def add(self, node: TreeNode, tokens: int) -> None:
        self.nodes[node.id] = node
        self.tokens[node.id] = tokens
        self.kids.setdefault(node.id, [])
        if node.parent is not None:
            index = int(node.id.rsplit(".", 1)[1])
            self.child_count[node.parent] = max(self.child_count.get(node.parent, 0), index + 1)
            if node.kind == "step":
                self.kids[node.parent].append(node.id)

    def new_child_id(self, parent: str) -> str:
        """The next free child id (rollout chains and step children share the numbering)."""
        return f"{parent}.{self.child_count.get(parent, 0)}"

    @property
    def root(self) -> TreeNode:
        return self.nodes[ROOT_ID]

    @property
    def iterations_done(self) -> int:
        return self.root.visits  # every iteration backs up through the root once

    def path(self, node_id: str) -> list[str]:
        parts = node_id.split(".")
        return [".".join(parts[: i + 1]) for i in range(len(parts))]

    def steps(self, node_id: str) -> list[str]:
        return [self.nodes[i].text for i in self.path(node_id)[1:]]

    def path_tokens(self, node_id: str) -> int:
        return sum(self.tokens.get(i, 0) for i in self.path(node_id))

    def _effective(self, node: TreeNode, virtual_loss: float) -> tuple[float, float]:
        """(Q, N) with this round's pending selections counted as losses (value 0)."""
        extra = virtual_loss * self.pending.get(node.id, 0)
        visits = node.visits + extra
        q = node.q * node.visits / visits if extra and visits else node.q
        return q, visits

    def select(self, config: SearchConfig) -> list[str] | None:
        """Walk from the root by PUCT to a leaf (unexpanded or terminal) that no earlier
        selection of this round took; returns the path, or None when every leaf is taken.

        Virtual loss alone cannot keep selections apart: when values are 0 a loss changes
        no Q, and the same child keeps the best score. So a selected leaf is closed for the
        rest of the round, and so is every node whose children are all closed."""
        if ROOT_ID in self.closed:
            return None
        path = [ROOT_ID]
        node = self.root
        while not node.terminal and self.kids.get(node.id):
            _, parent_visits = self._effective(node, config.virtual_loss)
            best: TreeNode | None = None
            best_score = -math.inf
            for child_id in self.kids[node.id]:
                if child_id in self.closed:
                    continue
                child = self.nodes[child_id]
                q, visits = self._effective(child, config.virtual_loss)
                score = puct(q, child.prior, parent_visits, visits, config.c_puct)
                if score > best_score:  # ties keep the first child
                    best, best_score = child, score
            assert best is not None  # an open node has an open child
            node = best
            path.append(node.id)
        for node_id in path:
            self.pending[node_id] = self.pending.get(node_id, 0) + 1
        self.closed.add(path[-1])
        for node_id in reversed(path[:-1]):
            if not all(kid in self.closed for kid in self.kids[node_id]):
                break
            self.closed.add(node_id)
        return path

    def end_round(self) -> None:
        """Forget this round's virtual losses and closed leaves."""
        self.pending.clear()
        self.closed.clear()

    def export(self, config: dict[str, Any], stats: dict[str, Any]) -> SearchTree:
        ordered = sorted(self.nodes.values(), key=lambda n: id_order(n.id))
        return SearchTree(
            problem_id=self.problem.id,
            problem=self.problem.problem,
            gold=self.problem.answer,
            nodes=ordered,
            config=config,
            stats=stats,
        )

    def stats(self) -> dict[str, Any]:
        terminals = [n for n in self.nodes.values() if n.terminal]
        return {
            "iterations": self.iterations_done,
            "nodes": len(self.nodes),
            "step_nodes": sum(1 for n in self.nodes.values() if n.kind == "step"),
            "terminals": len(terminals),
            "correct_terminals": sum(1 for n in terminals if n.correct),
            "solved": any(n.correct for n in terminals),
            "generator_calls": self.generator_calls,
        }


@dataclass
class _Pending:
    """A node created this round, waiting for its value."""

    tree: TreeSearch
    node: TreeNode
    tokens: int
    scores: list[float] = field(default_factory=list)


@dataclass
class SearchCounters:
    generator_calls: int = 0
    verifier_calls: int = 0
    nodes_created: int = 0
    generate_seconds: float = 0.0
    verify_seconds: float = 0.0


class MCTS:
    """Batched multi-tree MCTS driver over a Generator, a Verifier and a TreeStore."""

    def __init__(
        self,
        generator: Generator,
        verifier: Verifier,
        store: TreeStore,
        config: SearchConfig,
        template: ChatTemplate,
    ) -> None:
        self.generator = generator
        self.verifier = verifier
        self.store = store
        self.config = config
        self.template = template
        self.counters = SearchCounters()

    # ---- trees -------------------------------------------------------------------------

    def open_tree(self, problem: Problem, key: str) -> TreeSearch:
        """Create the tree in the store, or load what the store already holds (resume)."""
        tree = TreeSearch(
            key=key,
            problem=problem,
            chat_prompt=self.template.render(problem_messages(problem.problem)),
        )
        header = TreeHeader(problem.id, problem.problem, problem.answer, self.config_dict())
        root = TreeNode(id=ROOT_ID, parent=None, depth=0, text="")
        if self.store.create_tree(key, header, StoredNode(root)):
            tree.add(root, 0)
            return tree
        for stored in self.store.load_nodes(key):
            tree.add(stored.node, stored.tokens)
        stored_header = self.store.header(key)
        tree.generator_calls = int(
            (stored_header.stats if stored_header else {}).get("generator_calls", 0)
        )
        return tree

    def config_dict(self) -> dict[str, Any]:
        return self.config.model_dump(mode="json")

    def is_done(self, tree: TreeSearch) -> bool:
        return tree.iterations_done >= self.config.iterations

    def finish(self, tree: TreeSearch) -> SearchTree:
        stats = tree.stats()
        self.store.set_stats(tree.key, stats)
        return tree.export(self.config_dict(), stats)

    # ---- one round ---------------------------------------------------------------------

    def step(self, trees: Sequence[TreeSearch]) -> None:
        """Advance each unfinished tree by up to parallel_selections iterations."""
        try:
            self._round(trees)
        finally:
            for tree in trees:
                tree.end_round()

    def _round(self, trees: Sequence[TreeSearch]) -> None:
        cfg = self.config
        selections: list[tuple[TreeSearch, list[str]]] = []
        for tree in trees:
            budget = min(cfg.parallel_selections, cfg.iterations - tree.iterations_done)
            for _ in range(max(budget, 0)):
                path = tree.select(cfg)
                if path is None:  # every leaf is taken this round
                    break
                selections.append((tree, path))

        to_expand = [(t, p) for t, p in selections if not t.nodes[p[-1]].terminal]
        new_nodes: dict[str, list[StoredNode]] = {}
        self._value(self._expand(to_expand), new_nodes)

        # Nodes are written once valued, together with the round's backups (one atomic
        # commit per tree): a stored expansion is complete and its Q counts its children.
        paths: dict[str, list[list[str]]] = {}
        for tree, path in selections:
            paths.setdefault(tree.key, []).append(path)
        for tree in trees:
            nodes = new_nodes.get(tree.key, [])
            if not nodes and not paths.get(tree.key):
                continue
            # root_visits: the store refuses the round (TreeConflict) if another worker
            # committed to the tree since this one read it (it took the tree over).
            for node_id, (visits, q) in self.store.commit(
                tree.key, nodes, paths.get(tree.key, []), root_visits=tree.root.visits
            ).items():
                tree.nodes[node_id].visits = visits
                tree.nodes[node_id].q = q
            self.counters.nodes_created += len(nodes)

    def _generate(
        self, trees: Iterable[TreeSearch], prompts: list[str], **kw: Any
    ) -> list[Completion]:
        seed = (
            None if self.config.seed is None else self.config.seed + self.counters.generator_calls
        )
        started = time.perf_counter()
        completions = self.generator.generate(
            prompts,
            temperature=self.config.temperature,
            top_p=self.config.top_p,
            seed=seed,
            **kw,
        )
        self.counters.generate_seconds += time.perf_counter() - started
        self.counters.generator_calls += 1
        check_reply(completions, len(prompts), kw["n"])
        for tree in {id(t): t for t in trees}.values():
            tree.generator_calls += 1
        return completions

    def _expand(self, selections: list[tuple[TreeSearch, list[str]]]) -> list[_Pending]:
        """Sample k children of every selected leaf in one call; returns nodes to value."""
        cfg = self.config
        if not selections:
            return []
        prompts = [
            continuation_prompt(t.chat_prompt, t.steps(p[-1]), cfg.step_delimiter)
            for t, p in selections
        ]
        # A step may not take the solution past max_solution_tokens (a non-terminal leaf
        # always has at least one token left).
        budgets = [
            max(min(cfg.max_step_tokens, cfg.max_solution_tokens - t.path_tokens(p[-1])), 1)
            for t, p in selections
        ]
        completions = self._generate(
            [t for t, _ in selections],
            prompts,
            n=cfg.k,
            max_tokens=budgets,
            stop=[cfg.step_delimiter],
            logprobs=True,
        )
        to_value: list[_Pending] = []
        for index, (tree, path) in enumerate(selections):
            leaf = tree.nodes[path[-1]]
            if leaf.id == ROOT_ID and not tree.kids[ROOT_ID]:
                to_value.append(_Pending(tree, leaf, 0))  # a fresh root is valued once
            group = completions[index * cfg.k : (index + 1) * cfg.k]
            priors = sibling_priors([c.cumulative_logprob for c in group])
            base_tokens = tree.path_tokens(leaf.id)
            for completion, prior in zip(group, priors, strict=True):
                text = completion.text.strip()
                answer = final_answer(text)
                tokens = completion.num_tokens
                node = TreeNode(
                    id=tree.new_child_id(leaf.id),
                    parent=leaf.id,
                    depth=leaf.depth + 1,
                    text=text,
                    prior=prior,
                    visits=1,
                    answer=answer,
                )
                node.terminal = (
                    answer is not None
                    or completion.finish_reason == "eos"  # the model ended its solution
                    or node.depth >= cfg.max_depth
                    or base_tokens + tokens >= cfg.max_solution_tokens
                    or (not text and completion.finish_reason != "length")
                )
                tree.add(node, tokens)
                to_value.append(_Pending(tree, node, tokens))
        return to_value

    def _value(self, pending: list[_Pending], new_nodes: dict[str, list[StoredNode]]) -> None:
        """Roll out every non-terminal new node M times; verify every terminal; set values."""
        cfg = self.config
        rolling = [p for p in pending if not p.node.terminal]
        checks: list[tuple[_Pending, TreeNode | None, str]] = []  # (owner, terminal, response)
        for item in pending:
            if item.node.terminal and item.node.answer is not None:
                steps = item.tree.steps(item.node.id)
                checks.append((item, item.node, cfg.step_delimiter.join(steps)))
        chains: list[tuple[_Pending, list[TreeNode]]] = []
        if rolling:
            prompts = [
                continuation_prompt(p.tree.chat_prompt, p.tree.steps(p.node.id), cfg.step_delimiter)
                for p in rolling
            ]
            # Each rollout gets what its own solution has left, in one batch.
            budgets = [
                max(cfg.max_solution_tokens - p.tree.path_tokens(p.node.id), 1) for p in rolling
            ]
            completions = self._rollouts([p.tree for p in rolling], prompts, budgets)
            for index, item in enumerate(rolling):
                group = completions[index * cfg.rollouts : (index + 1) * cfg.rollouts]
                for completion in group:
                    chain = self._rollout_chain(item, completion.text)
                    chains.append((item, chain))
                    if chain and chain[-1].answer is not None:
                        steps = item.tree.steps(item.node.id) + [n.text for n in chain]
                        checks.append((item, chain[-1], cfg.step_delimiter.join(steps)))
        verdicts: dict[int, float] = {}
        if checks:
            items = [
                VerifyItem(
                    response=text, gold=p.tree.problem.answer, problem=p.tree.problem.problem
                )
                for p, _, text in checks
            ]
            started = time.perf_counter()
            results = self.verifier.verify_batch(items, SEARCH_REWARDS)
            self.counters.verify_seconds += time.perf_counter() - started
            self.counters.verifier_calls += 1
            for (_, terminal, _), result in zip(checks, results, strict=True):
                assert terminal is not None
                terminal.correct = result.correct
                terminal.answer = result.extracted_answer or terminal.answer
                verdicts[id(terminal)] = result.reward
        for item, chain in chains:
            score = verdicts.get(id(chain[-1]), 0.0) if chain else 0.0
            item.scores.append(score)
            for node in chain:
                node.q = node.rollout_value = score
        for item in pending:
            node = item.node
            if node.terminal:
                value = verdicts.get(id(node), 0.0)
            else:
                value = sum(item.scores) / len(item.scores) if item.scores else 0.0
            node.rollout_value = value
            if node.id != ROOT_ID:
                node.q = value
        # Parents before children: valued nodes first, then their rollout chains.
        for item in pending:
            new_nodes.setdefault(item.tree.key, []).append(StoredNode(item.node, item.tokens))
        for item, chain in chains:
            new_nodes[item.tree.key].extend(StoredNode(n) for n in chain)

    def _rollouts(
        self, trees: list[TreeSearch], prompts: list[str], budgets: list[int]
    ) -> list[Completion]:
        """M completions of each prompt, each run to the end of a solution (the model's
        end-of-sequence or the prompt's token budget), in one call."""
        return self._generate(trees, prompts, n=self.config.rollouts, max_tokens=budgets)

    def _rollout_chain(self, item: _Pending, text: str) -> list[TreeNode]:
        """Split a rollout into steps, cut at the first final answer or at max_depth."""
        cfg = self.config
        tree, parent = item.tree, item.node
        parts = [s.strip() for s in text.split(cfg.step_delimiter)]
        parts = [s for s in parts if s][: max(cfg.max_depth - parent.depth, 0)]
        chain: list[TreeNode] = []
        for part in parts:
            answer = final_answer(part)
            node = TreeNode(
                id=tree.new_child_id(parent.id),
                parent=parent.id,
                depth=parent.depth + 1,
                text=part,
                kind="rollout",
                answer=answer,
            )
            tree.add(node, 0)
            chain.append(node)
            parent = node
            if answer is not None:
                break
        if chain:
            chain[-1].terminal = True
        return chain

    # ---- whole searches ----------------------------------------------------------------

    def run(
        self,
        problems: Sequence[Problem],
        keys: Sequence[str] | None = None,
        max_active: int = 64,
        on_finish: Callable[[SearchTree], None] | None = None,
    ) -> list[SearchTree]:
        """Search every problem, keeping up to max_active trees in each round."""
        keys = list(keys) if keys is not None else [f"{i}" for i in range(len(problems))]
        queue = list(zip(problems, keys, strict=True))
        queue.reverse()
        active: list[TreeSearch] = []
        finished: dict[str, SearchTree] = {}
        while queue or active:
            while queue and len(active) < max_active:
                problem, key = queue.pop()
                active.append(self.open_tree(problem, key))
            self.step(active)
            for tree in [t for t in active if self.is_done(t)]:
                result = self.finish(tree)
                finished[tree.key] = result
                if on_finish is not None:
                    on_finish(result)
            active = [t for t in active if t.key not in finished]
        return [finished[k] for k in keys]
