from services.protos.astro.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StartSearchRequest(_message.Message):
    __slots__ = ("problems", "dataset_path", "limit", "preset", "config_yaml", "model", "client_request_id")
    PROBLEMS_FIELD_NUMBER: _ClassVar[int]
    DATASET_PATH_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    PRESET_FIELD_NUMBER: _ClassVar[int]
    CONFIG_YAML_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    CLIENT_REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    problems: _containers.RepeatedCompositeFieldContainer[_common_pb2.Problem]
    dataset_path: str
    limit: int
    preset: str
    config_yaml: str
    model: _common_pb2.ModelRef
    client_request_id: str
    def __init__(self, problems: _Optional[_Iterable[_Union[_common_pb2.Problem, _Mapping]]] = ..., dataset_path: _Optional[str] = ..., limit: _Optional[int] = ..., preset: _Optional[str] = ..., config_yaml: _Optional[str] = ..., model: _Optional[_Union[_common_pb2.ModelRef, _Mapping]] = ..., client_request_id: _Optional[str] = ...) -> None: ...

class StartSearchResponse(_message.Message):
    __slots__ = ("search_id",)
    SEARCH_ID_FIELD_NUMBER: _ClassVar[int]
    search_id: str
    def __init__(self, search_id: _Optional[str] = ...) -> None: ...

class GetSearchRequest(_message.Message):
    __slots__ = ("search_id",)
    SEARCH_ID_FIELD_NUMBER: _ClassVar[int]
    search_id: str
    def __init__(self, search_id: _Optional[str] = ...) -> None: ...

class SearchStatus(_message.Message):
    __slots__ = ("search_id", "state", "problems_done", "problems_total", "nodes", "solved_fraction", "generator_calls", "elapsed_seconds", "message")
    SEARCH_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PROBLEMS_DONE_FIELD_NUMBER: _ClassVar[int]
    PROBLEMS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    SOLVED_FRACTION_FIELD_NUMBER: _ClassVar[int]
    GENERATOR_CALLS_FIELD_NUMBER: _ClassVar[int]
    ELAPSED_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    search_id: str
    state: str
    problems_done: int
    problems_total: int
    nodes: int
    solved_fraction: float
    generator_calls: int
    elapsed_seconds: float
    message: str
    def __init__(self, search_id: _Optional[str] = ..., state: _Optional[str] = ..., problems_done: _Optional[int] = ..., problems_total: _Optional[int] = ..., nodes: _Optional[int] = ..., solved_fraction: _Optional[float] = ..., generator_calls: _Optional[int] = ..., elapsed_seconds: _Optional[float] = ..., message: _Optional[str] = ...) -> None: ...

class GetTreeRequest(_message.Message):
    __slots__ = ("search_id", "problem_id")
    SEARCH_ID_FIELD_NUMBER: _ClassVar[int]
    PROBLEM_ID_FIELD_NUMBER: _ClassVar[int]
    search_id: str
    problem_id: str
    def __init__(self, search_id: _Optional[str] = ..., problem_id: _Optional[str] = ...) -> None: ...
