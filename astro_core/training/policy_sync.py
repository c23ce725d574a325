"""Policy sync: after an update, make the generator serve the new policy, or raise.

Two ways behind one interface (`PolicySync`):

- `RegistrySync`: save the policy as an HF checkpoint, register it (stage grpo), and have the
  generator service load that version: by `LoadModel`, or by waiting until a generator that
  follows the registry alias serves it. Works across pods; the default for Jobs.
- `ColocateSync`: the trainer holds an in-process engine and copies the new weights into it.
  The default on one machine.

Every push has a deadline and raises `SyncTimeout` when it passes: a hung weight sync must
stop the run with a message, not stall it silently. Each sync also keeps the map from the
version strings completions carry to policy versions (optimizer steps), which is how the
trainer measures a rollout's lag and recognises a generator that serves another model.
"""

from __future__ import annotations

import shutil
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, Protocol

import torch

from astro_core.checkpoints import CheckpointError, CheckpointStore
from astro_core.engines.base import Engine
from astro_core.protocols import Generator
from astro_core.training.rollouts import ServedModelMismatch

RegistryLoad = Literal["load_model", "follow_alias"]
_POLL_SECONDS = 0.1


class SyncTimeout(TimeoutError):
    """The generator did not serve the new policy before the sync deadline."""


class PolicyWeights(Protocol):
    """The policy as sync needs it (the trainer provides it): full weights under the HF names
    (LoRA adapters merged, ZeRO-3 shards gathered), or saved as an HF model directory."""

    def named_tensors(self) -> Iterable[tuple[str, torch.Tensor]]: ...

    def save_pretrained(self, directory: Path) -> None: ...


class ServedModel(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def version(self) -> str: ...


class ModelServer(Generator, Protocol):
    """A generator that reports and swaps its model (services' GeneratorClient is one)."""

    def model_info(self, *, timeout: float | None = None) -> ServedModel: ...

    def load_model(
        self,
        path: str = "",
        *,
        name: str = "",
        version: int = 0,
        alias: str = "",
        timeout: float | None = None,
    ) -> ServedModel: ...


class PolicySync(ABC):
    """Where rollouts come from (`generator`), and how it gets each new policy version."""

    kind: str
    generator: Generator

    def __init__(self, initial_version: str, timeout_seconds: float) -> None:
        if timeout_seconds <= 0:
            raise ValueError(f"sync timeout must be > 0 seconds, got {timeout_seconds}")
        self.initial_version = initial_version
        self.timeout_seconds = timeout_seconds
        self.versions: dict[str, int] = {initial_version: 0}
        self.served_version = 0  # the policy version the generator serves

    def version_of(self, model_version: str) -> int:
        """The policy version a completion's model_version stands for."""
        if model_version in self.versions:
            return self.versions[model_version]
        raise ServedModelMismatch(
            f"the generator serves {model_version!r}, which is not the policy being trained "
            f"(it started as {self.initial_version!r}); give the generator the policy's model"
        )

    def start(self, weights: PolicyWeights, version: int) -> None:
        """Before the first rollout: a fresh run checks that the generator serves the starting
        policy; a resumed run (version > 0) pushes its weights."""
        if version == 0:
            self.check_served()
        else:
            self.push(weights, version)

    @abstractmethod
    def check_served(self) -> None:
        """Raise ServedModelMismatch unless the generator serves the starting policy."""

    @abstractmethod
    def push(
        self, weights: PolicyWeights, version: int, metrics: Mapping[str, float] | None = None
    ) -> str:
        """Make the generator serve `weights` as policy `version`; returns the version string
        its completions will carry. Raises SyncTimeout after timeout_seconds."""

    def close(self) -> None:  # noqa: B027 - most syncs hold nothing
        """Release what the sync holds (the colocated engine)."""


class ColocateSync(PolicySync):
    """An engine in this process (astro_core.engines), its weights overwritten in place."""

    kind = "colocate"

    def __init__(self, engine: Engine, timeout_seconds: float = 300.0) -> None:
        super().__init__(engine.model_version, timeout_seconds)
        self.engine = engine
        self.generator = engine

    def check_served(self) -> None:
        self.version_of(self.engine.model_version)

    def push(
        self, weights: PolicyWeights, version: int, metrics: Mapping[str, float] | None = None
    ) -> str:
        model: torch.nn.Module = getattr(self.engine, "model", None)  # type: ignore[assignment]
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"colocate sync needs an engine holding a torch model, not {model!r}")
        failure: list[BaseException] = []
        # Read here, in the caller's thread: under ZeRO-3 reading gathers (a collective).
        tensors = list(weights.named_tensors())

        def copy() -> None:
            try:
                copy_weights(model, tensors)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
                failure.append(exc)

        # A thread, so that a copy that never returns (a wedged device) still ends in
        # SyncTimeout; the engine is not used again after that.
        worker = threading.Thread(target=copy, name="colocate-sync", daemon=True)
        worker.start()
        worker.join(self.timeout_seconds)
        if worker.is_alive():
            raise SyncTimeout(
                f"copying policy version {version} into the colocated engine took over "
                f"{self.timeout_seconds:g} s"
            )
        if failure:
            raise failure[0]
        served = f"{self.initial_version}+v{version}"
        self.engine.model_version = served
        self.versions[served] = version
        self.served_version = version
        return served

    def close(self) -> None:
        self.engine.close()


@torch.no_grad()
def copy_weights(model: torch.nn.Module, tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
    """Copy named tensors into model's parameters and buffers of the same names (dtype and
    device converted). Every parameter must be given once: a missing or unknown name means the
    policy and the engine are not the same architecture."""
    targets: dict[str, torch.Tensor] = dict(model.named_parameters())
    targets.update(dict(model.named_buffers()))
    params = set(dict(model.named_parameters()))
    seen: set[str] = set()
    for name, tensor in tensors:
        target = targets.get(name)
        if target is None:
            raise ServedModelMismatch(f"the colocated engine's model has no weight {name!r}")
        if target.shape != tensor.shape:
            raise ServedModelMismatch(
                f"weight {name} is {tuple(tensor.shape)} in the policy but "
                f"{tuple(target.shape)} in the colocated engine"
            )
        target.copy_(tensor)
        seen.add(name)
    missing = sorted(params - seen)
    if missing:
        raise ServedModelMismatch(
            f"the policy has no weight {missing[0]!r} of the colocated engine "
            f"({len(missing)} missing)"
        )


class RegistrySync(PolicySync):
    """Save -> register -> the generator service serves the registered version."""

    kind = "registry"

    def __init__(
        self,
        generator: ModelServer,
        store: CheckpointStore,
        *,
        name: str,
        initial_version: str,
        work_dir: str | Path,
        load: RegistryLoad = "load_model",
        alias: str = "latest",
        parent_version: int = 0,
        timeout_seconds: float = 600.0,
        delete_previous: bool = True,
    ) -> None:
        super().__init__(initial_version, timeout_seconds)
        self.generator = generator
        self.server = generator
        self.store = store
        self.name = name
        self.work_dir = Path(work_dir)
        self.load = load
        self.alias = alias
        self.parent_version = parent_version
        self.delete_previous = delete_previous
        self._pushed: list[int] = []  # registry versions this sync registered

    def check_served(self) -> None:
        info = self.server.model_info(timeout=self.timeout_seconds)
        if info.version not in self.versions:
            raise ServedModelMismatch(
                f"the generator serves {info.version!r} ({info.name}), not the policy "
                f"{self.initial_version!r}: start it with the policy's model or LoadModel it"
            )

    def push(
        self, weights: PolicyWeights, version: int, metrics: Mapping[str, float] | None = None
    ) -> str:
        deadline = time.monotonic() + self.timeout_seconds
        directory = self.work_dir / f"sync-v{version}"
        if directory.exists():
            shutil.rmtree(directory)
        try:
            weights.save_pretrained(directory)
            aliases = [self.alias] if self.load == "follow_alias" and self.alias != "latest" else []
            info = self.store.register(
                self.name,
                directory,
                stage="grpo",
                parent_version=self.parent_version,
                step=version,
                metrics=dict(metrics or {}),
                aliases=aliases,
            )
        finally:
            shutil.rmtree(directory, ignore_errors=True)
        served = info.ref
        self.versions[served] = version
        self._check_deadline(deadline, f"registering {served}")
        if self.load == "load_model":
            self._load(info.version, served, deadline)
        else:
            self._wait_until_served(served, deadline)
        self.served_version = version
        self._drop_previous(info.version)
        return served

    def _load(self, registry_version: int, served: str, deadline: float) -> None:
        try:
            reply = self.server.load_model(
                name=self.name, version=registry_version, timeout=self._remaining(deadline)
            )
        except Exception as exc:
            if time.monotonic() >= deadline:
                raise SyncTimeout(
                    f"the generator did not load {served} within {self.timeout_seconds:g} s"
                ) from exc
            raise
        if reply.version != served:
            raise ServedModelMismatch(
                f"the generator was asked to load {served} but serves {reply.version!r}"
            )

    def _wait_until_served(self, served: str, deadline: float) -> None:
        seen = ""
        while True:
            remaining = self._remaining(deadline)
            try:
                seen = self.server.model_info(timeout=remaining).version
            except Exception as exc:
                if time.monotonic() >= deadline:
                    raise SyncTimeout(f"the generator did not answer before {served}") from exc
                raise
            if seen == served:
                return
            if time.monotonic() + _POLL_SECONDS >= deadline:
                raise SyncTimeout(
                    f"the generator still serves {seen!r} {self.timeout_seconds:g} s after "
                    f"{served} was registered: does it follow alias {self.alias!r} of "
                    f"{self.name!r} (settings.follow_alias)?"
                )
            time.sleep(_POLL_SECONDS)

    def _remaining(self, deadline: float) -> float:
        return max(deadline - time.monotonic(), 0.001)

    def _check_deadline(self, deadline: float, what: str) -> None:
        if time.monotonic() >= deadline:
            raise SyncTimeout(f"{what} took over {self.timeout_seconds:g} s")

    def _drop_previous(self, current: int) -> None:
        """Delete the version this sync registered before (nothing serves it any more), so a
        long run does not keep one full checkpoint per step. Checkpoints saved by the trainer
        (save_steps) are not this sync's and stay."""
        previous, self._pushed = self._pushed, [current]
        delete: Any = getattr(self.store, "delete", None)
        if not self.delete_previous or delete is None:
            return
        for old in previous:
            try:
                delete(self.name, old)
            except (CheckpointError, LookupError):
                pass  # an alias points at it (someone keeps it), or it is gone already
