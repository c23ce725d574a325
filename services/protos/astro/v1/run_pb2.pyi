from services.protos.astro.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RunSpec(_message.Message):
    __slots__ = ("name", "stages", "problems_path", "rl_prompts_path", "eval_benchmarks", "base_model", "config_yaml", "output_uri", "direct_control", "eval_checkpoints", "trainer_backend")
    NAME_FIELD_NUMBER: _ClassVar[int]
    STAGES_FIELD_NUMBER: _ClassVar[int]
    PROBLEMS_PATH_FIELD_NUMBER: _ClassVar[int]
    RL_PROMPTS_PATH_FIELD_NUMBER: _ClassVar[int]
    EVAL_BENCHMARKS_FIELD_NUMBER: _ClassVar[int]
    BASE_MODEL_FIELD_NUMBER: _ClassVar[int]
    CONFIG_YAML_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_URI_FIELD_NUMBER: _ClassVar[int]
    DIRECT_CONTROL_FIELD_NUMBER: _ClassVar[int]
    EVAL_CHECKPOINTS_FIELD_NUMBER: _ClassVar[int]
    TRAINER_BACKEND_FIELD_NUMBER: _ClassVar[int]
    name: str
    stages: _containers.RepeatedScalarFieldContainer[str]
    problems_path: str
    rl_prompts_path: str
    eval_benchmarks: _containers.RepeatedScalarFieldContainer[str]
    base_model: _common_pb2.ModelRef
    config_yaml: str
    output_uri: str
    direct_control: bool
    eval_checkpoints: _containers.RepeatedScalarFieldContainer[str]
    trainer_backend: str
    def __init__(self, name: _Optional[str] = ..., stages: _Optional[_Iterable[str]] = ..., problems_path: _Optional[str] = ..., rl_prompts_path: _Optional[str] = ..., eval_benchmarks: _Optional[_Iterable[str]] = ..., base_model: _Optional[_Union[_common_pb2.ModelRef, _Mapping]] = ..., config_yaml: _Optional[str] = ..., output_uri: _Optional[str] = ..., direct_control: _Optional[bool] = ..., eval_checkpoints: _Optional[_Iterable[str]] = ..., trainer_backend: _Optional[str] = ...) -> None: ...

class StartRunRequest(_message.Message):
    __slots__ = ("spec", "client_request_id")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    CLIENT_REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    spec: RunSpec
    client_request_id: str
    def __init__(self, spec: _Optional[_Union[RunSpec, _Mapping]] = ..., client_request_id: _Optional[str] = ...) -> None: ...

class GetRunRequest(_message.Message):
    __slots__ = ("run_id",)
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    def __init__(self, run_id: _Optional[str] = ...) -> None: ...

class WatchRunRequest(_message.Message):
    __slots__ = ("run_id", "after_event_id")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    after_event_id: str
    def __init__(self, run_id: _Optional[str] = ..., after_event_id: _Optional[str] = ...) -> None: ...

class StageStatus(_message.Message):
    __slots__ = ("name", "state", "done", "total", "artifacts", "metrics", "message", "started_unix", "finished_unix", "attempts", "inputs")
    class ArtifactsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class InputsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    ARTIFACTS_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    STARTED_UNIX_FIELD_NUMBER: _ClassVar[int]
    FINISHED_UNIX_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    name: str
    state: str
    done: int
    total: int
    artifacts: _containers.ScalarMap[str, str]
    metrics: _containers.ScalarMap[str, float]
    message: str
    started_unix: float
    finished_unix: float
    attempts: int
    inputs: _containers.ScalarMap[str, str]
    def __init__(self, name: _Optional[str] = ..., state: _Optional[str] = ..., done: _Optional[int] = ..., total: _Optional[int] = ..., artifacts: _Optional[_Mapping[str, str]] = ..., metrics: _Optional[_Mapping[str, float]] = ..., message: _Optional[str] = ..., started_unix: _Optional[float] = ..., finished_unix: _Optional[float] = ..., attempts: _Optional[int] = ..., inputs: _Optional[_Mapping[str, str]] = ...) -> None: ...

class RunStatus(_message.Message):
    __slots__ = ("run_id", "spec", "state", "stage", "artifacts", "message", "created_unix", "updated_unix", "stages", "output_dir")
    class ArtifactsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    ARTIFACTS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CREATED_UNIX_FIELD_NUMBER: _ClassVar[int]
    UPDATED_UNIX_FIELD_NUMBER: _ClassVar[int]
    STAGES_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_DIR_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    spec: RunSpec
    state: str
    stage: str
    artifacts: _containers.ScalarMap[str, str]
    message: str
    created_unix: float
    updated_unix: float
    stages: _containers.RepeatedCompositeFieldContainer[StageStatus]
    output_dir: str
    def __init__(self, run_id: _Optional[str] = ..., spec: _Optional[_Union[RunSpec, _Mapping]] = ..., state: _Optional[str] = ..., stage: _Optional[str] = ..., artifacts: _Optional[_Mapping[str, str]] = ..., message: _Optional[str] = ..., created_unix: _Optional[float] = ..., updated_unix: _Optional[float] = ..., stages: _Optional[_Iterable[_Union[StageStatus, _Mapping]]] = ..., output_dir: _Optional[str] = ...) -> None: ...

class ListRunsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListRunsResponse(_message.Message):
    __slots__ = ("runs", "next_page_token")
    RUNS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    runs: _containers.RepeatedCompositeFieldContainer[RunStatus]
    next_page_token: str
    def __init__(self, runs: _Optional[_Iterable[_Union[RunStatus, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...
