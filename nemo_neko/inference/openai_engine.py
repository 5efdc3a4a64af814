"""Correct record files through an OpenAI-compatible server (vLLM, TensorRT-LLM, NIM, llama.cpp,
``transformers serve``) serving the run's exported model::

    python -m nemo_neko.convert export --checkpoint runs/neko-tiny --out neko-tiny-hf
    transformers serve neko-tiny-hf --port 8000 --device cpu     # or vllm serve neko-tiny-hf
    python -m nemo_neko.eval correct --run-dir runs/neko-tiny --engine openai \\
        --base-url http://localhost:8000/v1 [--served-model NAME] [--concurrency 4]

The run directory gives what it gives the local engine: the records (its held-out sets, or
``--records``), the tokenizer, the prompt format and system prompt, the new-token limits. Each
prompt is built as the local engine builds it (:meth:`SampleBuilder.inference_prompt
<nemo_neko.data.samples.SampleBuilder.inference_prompt>`: ``[BOS] + prompt``, or the chat
template up to the assistant turn, shortened to fit), and the token sequence is rendered back to
text, special tokens included, and sent to ``/v1/completions`` with ``temperature 0`` (greedy),
``max_tokens`` = the record's limit and ``stop`` = the EOS / end-of-turn text. The completions
API, not chat completions: the server re-tokenises exactly this text, so the model reads the same
token ids as the local engine, whereas chat completions would re-render the conversation with
the server's template and defaults (system turn, BOS, no shortening). The reply's
``usage.prompt_tokens`` is checked against the local prompt's length on every request; a server
whose tokenizer adds BOS itself is detected on the first request and sent the prompt without it.

Before any work, ``/v1/models`` must answer and list the served model (one line otherwise), and
the first prompt is sent with ``max_tokens=1``. Requests run in a bounded thread pool
(``--concurrency``); connection errors, timeouts, 429 and 5xx are retried with exponential
backoff; other HTTP errors stop the run. Each prediction line is appended (and flushed) as its
reply arrives, so the file is in completion order, not record order; ids are the join key and a
rerun resumes by id (:mod:`nemo_neko.inference.provenance`); when a request fails for good, the
replies already in are written first. The lines are the local engine's without ``routing`` (a
server reports no expert choices) and ``time`` (``{"id", "prediction", "record", "source"}``); ``source`` names ``engine: openai``, the base URL, the served model, the prompt
rendering and the generation settings, so switching engine or server moves old predictions aside
like a checkpoint change does.

``generate.no_repeat_ngram_size`` has no OpenAI-API equivalent: such a run is refused unless
``--ignore-no-repeat-ngram`` (the source then records ``no_repeat_ngram_size: 0``).
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import time
import urllib.error
import urllib.request
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from nemo_neko.data.records import CorrectionRecord, read_records, write_records
from nemo_neko.data.samples import SampleBuilder
from nemo_neko.inference.provenance import describe_source, record_digest, resume
from nemo_neko.paths import RunPaths, records_beside
from nemo_neko.tasks import get_task

__all__ = ["OpenAIClient", "ServerError", "correct_records_openai", "openai_source"]

log = logging.getLogger(__name__)

ENGINE = "openai"
RETRYABLE_STATUS = {408, 429, 500, 502, 503, 504}


class ServerError(ValueError):
    """The server cannot be used (unreachable, model not served, a refused request): the CLI
    prints it as one line (a ``ValueError``, as bad input is)."""


@dataclass
class OpenAIClient:
    """A minimal OpenAI-API client on ``urllib`` (no extra dependency).

    Args:
        base_url: ``http://host:port/v1``.
        api_key: sent as ``Authorization: Bearer``; None sends none.
        timeout: seconds per request.
        retries: further attempts after a connection error, timeout, 429 or 5xx.
        backoff: seconds before the first retry, doubled each time.
    """

    base_url: str
    api_key: str | None = None
    timeout: float = 600.0
    retries: int = 5
    backoff: float = 1.0

    def request(
        self, path: str, body: dict | None = None, retries: int | None = None, warn: bool = True
    ) -> dict:
        """GET (``body`` None) or POST JSON to ``base_url + path``; the decoded JSON reply
        (``warn``: log each retry as a warning, else at debug level)."""
        url = self.base_url.rstrip("/") + path
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        data = None if body is None else json.dumps(body).encode("utf-8")
        attempts = 1 + (self.retries if retries is None else retries)
        for attempt in range(attempts):
            request = urllib.request.Request(url, data=data, headers=headers)
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as reply:
                    return json.loads(reply.read())
            except urllib.error.HTTPError as err:
                detail = err.read().decode("utf-8", "replace").strip().replace("\n", " ")[:300]
                problem = ServerError(f"{url}: HTTP {err.code} {err.reason}: {detail}")
                problem.status = err.code
                if err.code not in RETRYABLE_STATUS:
                    raise problem from None
            except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
                reason = getattr(err, "reason", err)
                problem = ServerError(f"cannot reach {url} ({reason}): is the server running?")
                problem.status = None
            except json.JSONDecodeError as err:
                raise ServerError(f"{url}: the reply is not JSON ({err})") from None
            if attempt + 1 < attempts:
                delay = self.backoff * 2**attempt
                log.log(
                    logging.WARNING if warn else logging.DEBUG,
                    "%s; retry in %.1f s",
                    problem,
                    delay,
                )
                time.sleep(delay)
        raise problem

    def served_models(self) -> list[str]:
        """The ids ``/v1/models`` lists."""
        reply = self.request("/models", retries=min(self.retries, 2), warn=False)
        return [str(item.get("id")) for item in reply.get("data", []) if isinstance(item, dict)]


def check_served_model(client: OpenAIClient, served_model: str | None) -> str:
    """The model to ask for: ``served_model`` if the server lists it, else the only one listed."""
    try:
        models = client.served_models()
    except ServerError as err:
        if served_model and getattr(err, "status", None) == 404:
            return served_model  # no /v1/models: trust the name given
        raise
    if served_model is None:
        if len(models) != 1:
            listed = ", ".join(models) or "none"
            raise ServerError(
                f"{client.base_url} serves {len(models)} models ({listed}): name one with "
                f"--served-model"
            )
        return models[0]
    if served_model not in models:
        raise ServerError(
            f"{client.base_url} does not serve {served_model!r} (it serves: "
            f"{', '.join(models) or 'nothing'}); pass one of those as --served-model"
        )
    return served_model


def openai_source(run, tokenizer, base_url: str, served_model: str) -> dict:
    """The ``source`` of predictions made through a server (see the module docstring)."""
    generate = run.generate
    return {
        "engine": ENGINE,
        "base_url": base_url.rstrip("/"),
        "served_model": served_model,
        "prompt": {
            "format": str(run.data.prompt_format),
            "system_prompt": run.data.system_prompt,
            "tokenizer": tokenizer.fingerprint(),
        },
        "generate": {
            "decoding": "greedy",
            "endpoint": "completions",
            "max_new_tokens": generate.max_new_tokens,
            "new_tokens_per_input_token": generate.new_tokens_per_input_token,
            "extra_new_tokens": generate.extra_new_tokens,
            "no_repeat_ngram_size": 0,
            "seq_length": run.data.seq_length,
        },
    }


def prompts_and_limits(run, tokenizer, records: list[CorrectionRecord]):
    """``({id: prompt ids}, {id: new-token limit})``, as the local engine computes them."""
    builder = SampleBuilder(
        tokenizer, run.data.seq_length, run.data.prompt_format, run.data.system_prompt
    )
    prompts, limits = {}, {}
    for record in records:
        baseline = len(tokenizer.encode(get_task(record.task).baseline(record)))
        limit = int(run.generate.new_tokens_per_input_token * baseline)
        limit += run.generate.extra_new_tokens
        limits[record.id] = min(run.generate.max_new_tokens, limit)
        prompts[record.id] = builder.inference_prompt(record, reserve=limits[record.id] + 1)
    return prompts, limits


class _Requests:
    """The completion requests of one run, with the prompt-length check."""

    def __init__(self, client, model, tokenizer, prompts: dict[str, list[int]], limits):
        self.client, self.model, self.tokenizer = client, model, tokenizer
        self.prompts, self.limits = prompts, limits
        self.texts = {
            i: tokenizer.decode(ids, skip_special_tokens=False) for i, ids in prompts.items()
        }
        unfaithful = [i for i, text in self.texts.items() if tokenizer.encode(text) != prompts[i]]
        if unfaithful:
            log.warning(
                "%d prompt(s) (e.g. %r) do not re-tokenise to the same ids (cut inside a "
                "character): the server may read them slightly differently",
                len(unfaithful),
                unfaithful[0],
            )
        self.stop = [tokenizer.special["eos"]]
        self.bos_text = tokenizer.special["bos"] if tokenizer.bos_id is not None else None
        self.strip_bos = False

    def text(self, record_id: str) -> str:
        text = self.texts[record_id]
        if self.strip_bos and self.prompts[record_id][:1] == [self.tokenizer.bos_id]:
            text = text[len(self.bos_text) :]
        return text

    def _post(self, record_id: str, max_tokens: int) -> tuple[str, int | None]:
        """``(completion text, the server's count of prompt tokens or None)``."""
        body = {
            "model": self.model,
            "prompt": self.text(record_id),
            "max_tokens": max_tokens,
            "temperature": 0,
            "n": 1,
            "stop": self.stop,
            "stream": False,
        }
        try:
            reply = self.client.request("/completions", body)
        except ServerError as err:
            if getattr(err, "status", None) == 404:
                raise ServerError(
                    f"{err} (this engine needs the completions API: the rendered prompt is sent "
                    f"as text so that the server reads the local engine's tokens)"
                ) from None
            raise
        choices = reply.get("choices") or [{}]
        if not isinstance(choices[0], dict) or "text" not in choices[0]:
            raise ServerError(f"{self.client.base_url}: a completion without text: {reply}")
        return str(choices[0]["text"]), (reply.get("usage") or {}).get("prompt_tokens")

    def _mismatch(self, record_id: str, counted: int) -> ServerError:
        return ServerError(
            f"{self.client.base_url}: the server read record {record_id!r}'s prompt as {counted} "
            f"tokens, the run's tokenizer makes {len(self.prompts[record_id])}: it does not "
            f"serve this run's model and tokenizer (export it with python -m nemo_neko.convert "
            f"export)"
        )

    def complete(self, record_id: str) -> str:
        """The completion of one record, stripped (as the local engine strips its decoding)."""
        if self.limits[record_id] <= 0:
            return ""
        text, counted = self._post(record_id, self.limits[record_id])
        if counted is not None and counted != len(self.prompts[record_id]):
            raise self._mismatch(record_id, counted)
        return text.strip()

    def probe(self, record_id: str) -> None:
        """One token for one prompt: the endpoint works and reads the prompt as we do (a
        tokenizer that adds BOS itself gets the prompts without it from now on)."""
        expected = len(self.prompts[record_id])
        _, counted = self._post(record_id, 1)
        if counted is None:
            log.warning("%s reports no usage: prompt lengths are not checked", self.client.base_url)
            return
        starts_with_bos = self.prompts[record_id][:1] == [self.tokenizer.bos_id]
        if counted == expected + 1 and self.bos_text and starts_with_bos:
            self.strip_bos = True
            _, counted = self._post(record_id, 1)
            log.info("the server's tokenizer adds BOS itself: prompts are sent without it")
        if counted != expected:
            raise self._mismatch(record_id, counted)


def correct_records_openai(
    run_dir: str | Path,
    base_url: str,
    record_paths: list[str] | None = None,
    out: str | Path | None = None,
    limit_per_dataset: int | None = None,
    served_model: str | None = None,
    api_key_env: str | None = None,
    concurrency: int = 4,
    ignore_no_repeat_ngram: bool = False,
    client: OpenAIClient | None = None,
) -> Path:
    """Write predictions for the records through the server at ``base_url``; returns the file.

    The inputs are checked as by :func:`~nemo_neko.inference.correct.correct_records`, then the
    server (reachable, the model served, the prompt read as the run's tokenizer reads it), all
    before the first prediction.
    """
    from nemo_neko.config import load_run_config
    from nemo_neko.data.tokenizer import TextTokenizer
    from nemo_neko.inference.correct import check_unique_ids, select_records
    from nemo_neko.utils.progress import Progress

    if concurrency < 1:
        raise ValueError(f"--concurrency must be at least 1, got {concurrency}")
    paths = RunPaths(run_dir)
    run = load_run_config(paths.config)
    if run.generate.no_repeat_ngram_size and not ignore_no_repeat_ngram:
        raise ValueError(
            f"{paths.config}: generate.no_repeat_ngram_size={run.generate.no_repeat_ngram_size} "
            f"has no OpenAI-API equivalent, so the server would decode differently from the local "
            f"engine; pass --ignore-no-repeat-ngram to correct without it"
        )
    api_key = None
    if api_key_env:
        api_key = os.environ.get(api_key_env)
        if not api_key:
            raise ValueError(f"--api-key-env {api_key_env}: that environment variable is not set")
    record_files = record_paths or [p for spec in run.data.test for p in spec.paths]
    limit = (
        limit_per_dataset if limit_per_dataset is not None else run.generate.max_records_per_dataset
    )
    every_record = read_records(record_files)
    check_unique_ids(every_record, record_files)
    records = select_records(every_record, limit)
    if not records:
        raise ValueError(f"{', '.join(map(str, record_files))}: no records to correct")
    tokenizer = TextTokenizer.from_dir(paths.tokenizer)
    client = client or OpenAIClient(base_url, api_key)
    model = check_served_model(client, served_model)
    out = Path(out) if out else paths.predictions
    source = openai_source(run, tokenizer, base_url, model)
    digests = {r.id: record_digest(r) for r in records}
    prompts, limits = prompts_and_limits(run, tokenizer, records)
    requests = _Requests(client, model, tokenizer, prompts, limits)
    requests.probe(min(prompts, key=lambda i: len(prompts[i])))
    finished = resume(out, source, digests)
    write_records(records_beside(out), records)
    todo = [r for r in records if r.id not in finished]
    print(
        f"correcting {len(todo)} records ({len(finished)} already done) with "
        f"{describe_source(source)} -> {out}",
        flush=True,
    )
    if not todo:
        return out
    progress = Progress(
        len(records), desc="correct", unit="records", done=len(finished), interval=20.0
    )
    with (
        open(out, "a", encoding="utf-8") as fh,
        ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="openai") as pool,
    ):
        pending = {pool.submit(requests.complete, r.id): r.id for r in todo}

        def write(future) -> None:
            record_id = pending.pop(future)
            line = {
                "id": record_id,
                "prediction": future.result(),
                "record": digests[record_id],
                "source": source,
            }
            fh.write(json.dumps(line, ensure_ascii=False) + "\n")
            fh.flush()
            progress.update(1)

        while pending:
            done, _ = wait(pending, return_when=FIRST_EXCEPTION)
            failed = [f for f in done if f.exception() is not None]
            for future in done:
                if future.exception() is None:
                    write(future)
            if failed:  # keep every reply that did arrive: a rerun resumes after them
                for other in list(pending):
                    other.cancel()
                finished, _ = wait([f for f in pending if not f.cancelled()])
                for future in finished:
                    if future in pending and future.exception() is None:
                        write(future)
                os.fsync(fh.fileno())
                raise failed[0].exception()
        os.fsync(fh.fileno())
    progress.close()
    return out
