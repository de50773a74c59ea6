"""Submit the compiled training pipeline to a Kubeflow Pipelines API server (KFP v2beta1, via kfp.Client).

One submission, in order:

1. check the options locally (cron syntax, parameter names and types against the package's declared
   inputs), so a typo never reaches the cluster;
2. get or create the experiment;
3. upload the pipeline if none has that name, otherwise find or upload the version for this file.
   Versions are content-addressed: without --version the name is `sha256-<first 12 hex digits>` of
   the package file, and every upload records the full digest in its description, so submitting the
   same file again reuses its version instead of piling up duplicates;
4. start a run of that version with the parameters, and, with a cron expression, a recurring run;
5. with wait=True, poll the run until it reaches a terminal state or the timeout, and map the
   outcome to an exit code: 0 succeeded, 1 failed/canceled/skipped, 2 still not finished.

Every failure of the API (unreachable host, HTTP error) becomes a SubmitError naming the host and the
endpoint; bad options are a ConfigError. `add_submit_arguments` / `run_submit` are the CLI wiring for
`portfolio-mlops pipeline submit`.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import re
import sys
import time
import urllib.error
import urllib.request
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

from portfolio_mlops import names
from portfolio_mlops.errors import ConfigError, PortfolioMLOpsError

DEFAULT_PACKAGE = Path(__file__).resolve().parent / names.COMPILED_PIPELINE
DEFAULT_PIPELINE_NAME = names.PIPELINE
DEFAULT_EXPERIMENT = names.EXPERIMENT

EXIT_SUCCEEDED = 0
EXIT_FAILED = 1
EXIT_TIMEOUT = 2

# KFP's run states (V2beta1RuntimeState) after which nothing changes any more.
TERMINAL_STATES = frozenset({"SUCCEEDED", "FAILED", "CANCELED", "SKIPPED"})

CRON_FORMAT = ("6 fields with seconds first: 'second minute hour day-of-month month day-of-week', "
               "e.g. '0 0 6 * * 1-5' = 06:00:00 Monday to Friday")

API = "/apis/v2beta1"
HEALTHZ = f"GET {API}/healthz"
PROBE_TIMEOUT_SECONDS = 15.0

_DIGEST_TAG = re.compile(r"sha256:([0-9a-f]{64})")


class SubmitError(PortfolioMLOpsError):
    """The KFP API could not be reached or refused a request; the message names the host and endpoint."""


@dataclass
class SubmitResult:
    """What a submission created or reused. Without wait, final_state is None and exit_code 0.

    recurring_run_id is None without a cron expression. message is the one-line outcome for people.
    """

    experiment_id: str
    pipeline_id: str
    version_id: str
    run_id: str
    run_url: str
    recurring_run_id: str | None = None
    final_state: str | None = None
    exit_code: int = EXIT_SUCCEEDED
    message: str = ""


def submit(host: str, package_path: str | Path, pipeline_name: str, experiment: str, params: dict, *,
           version_name: str | None = None, run_name: str | None = None, cron: str | None = None,
           wait: bool = False, timeout_seconds: float = 3600, poll_seconds: float = 5,
           namespace: str | None = None, existing_token: str | None = None,
           progress: Callable[[str], None] = print) -> SubmitResult:
    """Submit `package_path` (compiled IR YAML) as a run of `pipeline_name` in `experiment`.

    `params` are the pipeline's run-time parameters (names and JSON types as declared in the package).
    `cron`: also schedule a recurring run of the same version with the same parameters (6-field KFP
    cron, seconds first). `wait`: follow the run for at most `timeout_seconds`, polling every
    `poll_seconds`. `namespace` and `existing_token` are for multi-user deployments.
    """
    host = _normalise_host(host)
    package = Path(package_path)
    if cron is not None:
        cron = validate_cron(cron)
    _check_parameters(declared_parameters(package), params, package)
    digest = hashlib.sha256(package.read_bytes()).hexdigest()

    _probe(host, existing_token)
    api = _Api(host, namespace, existing_token)

    experiment_id = _experiment_id(api, experiment, namespace, progress)
    pipeline_id, version_id, version_label = _pipeline_version(
        api, package, digest, pipeline_name, version_name, namespace, progress)

    # The first version is named after the pipeline; say it once.
    label = pipeline_name if version_label == pipeline_name else f"{pipeline_name} {version_label}"
    run_name = run_name or f"{label} {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime())} UTC"
    run = api.call(f"POST {API}/runs", api.client.run_pipeline, experiment_id=experiment_id, job_name=run_name,
                   params=params, pipeline_id=pipeline_id, version_id=version_id)
    run_url = f"{_ui_base(host)}/#/runs/details/{run.run_id}"
    progress(f"Started run '{run_name}' ({run.run_id}): {run_url}")
    result = SubmitResult(experiment_id, pipeline_id, version_id, run.run_id, run_url,
                          message=f"Run {run.run_id} submitted: {run_url}")

    if cron is not None:
        recurring = api.call(
            f"POST {API}/recurringruns", api.client.create_recurring_run, experiment_id=experiment_id,
            job_name=f"{label} on '{cron}'", cron_expression=cron, params=params,
            pipeline_id=pipeline_id, version_id=version_id,
            # After a pause, run once for the latest missed time rather than once per missed time.
            no_catchup=True)
        result.recurring_run_id = recurring.recurring_run_id
        progress(f"Scheduled recurring run {recurring.recurring_run_id} on cron '{cron}' (version {version_label}): "
                 f"{_ui_base(host)}/#/recurringrun/details/{recurring.recurring_run_id}")

    if wait:
        result.final_state, result.exit_code, result.message = _follow(
            api, run.run_id, run_url, timeout_seconds, poll_seconds, progress)
    return result


# ---- checks before any request ----------------------------------------------------------------------

_CRON_FIELDS = (  # name, lowest, highest, names accepted in place of numbers
    ("second", 0, 59, ()),
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day-of-month", 1, 31, ()),
    ("month", 1, 12, ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")),
    ("day-of-week", 0, 6, ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")),
)
_CRON_ITEM = re.compile(r"(?P<span>\*|\?|(?P<low>[A-Za-z0-9]+)(?:-(?P<high>[A-Za-z0-9]+))?)(?:/(?P<step>\d+))?")


def validate_cron(expression: str) -> str:
    """Return the expression (whitespace normalised) if it is a valid KFP cron, else raise ConfigError.

    KFP schedules with robfig/cron including a seconds field, so a classic 5-field crontab line
    ('0 6 * * 1-5') would be misread; it is rejected with the 6-field form it probably meant.
    """
    fields = expression.split()
    if len(fields) != 6:
        hint = f" (for a 5-field crontab line, prefix the seconds: '0 {' '.join(fields)}')" if len(fields) == 5 else ""
        raise ConfigError(f"cron {expression!r} has {len(fields)} field(s); KFP expects {CRON_FORMAT}{hint}")
    for text, (name, low, high, names) in zip(fields, _CRON_FIELDS):
        for item in text.split(","):
            problem = _cron_item_problem(item, name, low, high, names)
            if problem:
                raise ConfigError(f"cron {expression!r}: {name} field {text!r}: {problem}; KFP expects {CRON_FORMAT}")
    return " ".join(fields)


def _cron_item_problem(item: str, name: str, low: int, high: int, names: tuple[str, ...]) -> str | None:
    match = _CRON_ITEM.fullmatch(item)
    if not match:
        return f"{item!r} is not a value, range (a-b), list (a,b) or step (*/n, a-b/n)"
    if match["span"] == "?" and name not in ("day-of-month", "day-of-week"):
        return "'?' is only allowed for day-of-month and day-of-week"
    if match["step"] is not None and int(match["step"]) == 0:
        return "a step must be at least 1"
    bounds = []
    for token in (match["low"], match["high"]):
        if token is None:
            continue
        if token.isdigit():
            value = int(token)
        elif token.upper() in names:
            value = names.index(token.upper()) + low
        else:
            return f"{token!r} is not a number{' or a name like ' + names[0] if names else ''}"
        if not low <= value <= high:
            return f"{value} is outside {low}-{high}"
        bounds.append(value)
    if len(bounds) == 2 and bounds[0] > bounds[1]:
        return f"range {item!r} runs backwards"
    return None


# The JSON types each KFP parameter type accepts (bool is an int in Python, so it is excluded by hand).
_PARAMETER_TYPES: dict[str, tuple[type, ...]] = {
    "STRING": (str,), "NUMBER_INTEGER": (int,), "NUMBER_DOUBLE": (int, float), "BOOLEAN": (bool,),
    "LIST": (list,), "STRUCT": (dict,),
}


def declared_parameters(package: Path) -> dict[str, dict[str, Any]]:
    """The pipeline's run-time parameters from its compiled IR YAML: name -> {parameterType, defaultValue?, isOptional?}."""
    if not package.is_file():
        raise ConfigError(f"pipeline package {package} does not exist (compile the pipeline first)")
    if package.suffix not in (".yaml", ".yml"):
        raise ConfigError(f"pipeline package {package}: expected compiled IR YAML (.yaml or .yml)")
    try:
        spec = next(iter(yaml.safe_load_all(package.read_text(encoding="utf-8"))), None)
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"pipeline package {package} is not valid YAML: {exc}") from exc
    if not isinstance(spec, dict) or "root" not in spec or "pipelineInfo" not in spec:
        raise ConfigError(f"pipeline package {package} is not a compiled KFP pipeline (no pipelineInfo/root)")
    return dict(((spec["root"].get("inputDefinitions") or {}).get("parameters") or {}))


def _check_parameters(declared: dict[str, dict[str, Any]], params: dict, package: Path) -> None:
    accepted = ", ".join(sorted(declared)) or "none"
    unknown = sorted(set(params) - set(declared))
    if unknown:
        raise ConfigError(f"parameter(s) {', '.join(unknown)} not declared by pipeline package {package} "
                          f"(it accepts: {accepted})")
    missing = sorted(name for name, spec in declared.items()
                     if name not in params and "defaultValue" not in spec and not spec.get("isOptional"))
    if missing:
        raise ConfigError(f"pipeline package {package} requires parameter(s) {', '.join(missing)} (no default)")
    for name, value in params.items():
        kind = declared[name].get("parameterType", "")
        allowed = _PARAMETER_TYPES.get(kind)
        if allowed is None:
            continue  # a type this check does not know; let the server judge
        if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
            raise ConfigError(f"parameter {name!r} is declared {kind} in {package}, got {value!r} "
                              f"({type(value).__name__})")


def _normalise_host(host: str) -> str:
    if not re.match(r"https?://", host or ""):
        raise ConfigError(f"--host {host!r}: expected a URL starting with http:// or https:// "
                          f"(e.g. http://127.0.0.1:8888 for a port-forwarded ml-pipeline service)")
    return host.rstrip("/")


def _ui_base(host: str) -> str:
    # kfp.Client builds its links the same way: the UI endpoint if configured, else the API host.
    return os.environ.get("KF_PIPELINES_UI_ENDPOINT", host).rstrip("/")


# ---- talking to the API --------------------------------------------------------------------------

def _probe(host: str, token: str | None) -> None:
    """Fail fast, with a timeout, if the API is not there.

    kfp.Client sets no socket timeout (a host that never answers hangs it for ever) and retries an
    HTTP error on healthz five times, five seconds apart, from its constructor; one bounded probe
    first gives a quick and readable error instead. No proxies: like kfp.Client's urllib3 pool.
    """
    request = urllib.request.Request(host + f"{API}/healthz")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=PROBE_TIMEOUT_SECONDS):
            pass
    except urllib.error.HTTPError as exc:
        raise SubmitError(f"KFP API at {host}: {HEALTHZ} answered HTTP {exc.code} {exc.reason}"
                          f"{_error_detail(exc.read())} (is --host the KFP API endpoint?)") from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise SubmitError(f"cannot reach the KFP API at {host} ({HEALTHZ}): {reason}. Is the host right and the "
                          f"API server (or its port-forward) running?") from exc


class _Api:
    """kfp.Client whose calls fail as SubmitError (naming host and endpoint) and stay quiet.

    kfp prints its own 'Experiment details: <link>' lines; submit reports through `progress` instead.
    """

    def __init__(self, host: str, namespace: str | None, token: str | None):
        import kfp

        self.host = host
        options: dict[str, Any] = {"host": host, "existing_token": token}
        if namespace:
            options["namespace"] = namespace
        self.client = self.call(HEALTHZ, kfp.Client, **options)

    def call(self, endpoint: str, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        import urllib3
        from kfp_server_api.exceptions import ApiException

        try:
            with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
                # "This client only works with Kubeflow Pipeline v2.0.0-beta.2 and later": known, and true here.
                warnings.simplefilter("ignore", FutureWarning)
                return function(*args, **kwargs)
        except ApiException as exc:
            status = f"HTTP {exc.status} {exc.reason}" if exc.status else str(exc.reason)
            raise SubmitError(f"KFP API at {self.host}: {endpoint} failed: {status}{_error_detail(exc.body)}") from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise SubmitError(f"cannot reach the KFP API at {self.host} ({endpoint}): {exc}") from exc
        except ValueError as exc:  # kfp's own checks, e.g. two pipelines with the same name
            raise SubmitError(f"KFP API at {self.host}: {endpoint}: {exc}") from exc


def _error_detail(body: Any) -> str:
    """The server's explanation from a KFP error body ({"error", "message", "code"}), if any."""
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if not body:
        return ""
    text = body
    with contextlib.suppress(ValueError):
        parsed = json.loads(body)
        if isinstance(parsed, dict):
            text = parsed.get("message") or parsed.get("error") or body
    return f": {str(text).strip()[:500]}"


def _name_filter(name: str) -> str:
    # The JSON form of KFP's Filter proto, as kfp.Client writes it (operation 1 = EQUALS).
    return json.dumps({"predicates": [{"operation": 1, "key": "display_name", "stringValue": name}]})


def _experiment_id(api: _Api, name: str, namespace: str | None, progress: Callable[[str], None]) -> str:
    found = api.call(f"GET {API}/experiments", api.client.list_experiments, filter=_name_filter(name),
                     namespace=namespace, page_size=2).experiments or []
    if len(found) > 1:
        raise SubmitError(f"KFP API at {api.host}: {len(found)} experiments are named {name!r}; expected one")
    if found:
        progress(f"Experiment '{name}' exists ({found[0].experiment_id})")
        return found[0].experiment_id
    created = api.call(f"POST {API}/experiments", api.client.create_experiment, name=name, namespace=namespace)
    progress(f"Created experiment '{name}' ({created.experiment_id})")
    return created.experiment_id


def _find_version(api: _Api, pipeline_id: str, name: str | None) -> Any:
    """The version of the pipeline with this name (or, with name None, the newest), or None."""
    found = api.call(f"GET {API}/pipelines/{pipeline_id}/versions", api.client.list_pipeline_versions,
                     pipeline_id=pipeline_id, filter=_name_filter(name) if name else None,
                     sort_by="created_at desc", page_size=1).pipeline_versions or []
    return found[0] if found else None


def _recorded_digest(description: str | None) -> str | None:
    match = _DIGEST_TAG.search(description or "")
    return match.group(1) if match else None


def _pipeline_version(api: _Api, package: Path, digest: str, pipeline_name: str, version_name: str | None,
                      namespace: str | None, progress: Callable[[str], None]) -> tuple[str, str, str]:
    """(pipeline_id, version_id, version name) for this package file, uploading only what is new."""
    description = f"{package.name} sha256:{digest} (uploaded by portfolio-mlops pipeline submit)"
    wanted = version_name or f"sha256-{digest[:12]}"
    found = api.call(f"GET {API}/pipelines", api.client.list_pipelines, filter=_name_filter(pipeline_name),
                     namespace=namespace, page_size=2).pipelines or []
    if len(found) > 1:
        raise SubmitError(f"KFP API at {api.host}: {len(found)} pipelines are named {pipeline_name!r}; expected one")

    if not found:
        pipeline = api.call(f"POST {API}/pipelines/upload", api.client.upload_pipeline,
                            pipeline_package_path=str(package), pipeline_name=pipeline_name,
                            description=description, namespace=namespace)
        # The server creates the first version with the upload, named after the pipeline and carrying
        # its description (hence the digest there); the upload answers with the pipeline only.
        version = _find_version(api, pipeline.pipeline_id, None)
        if version is None:
            raise SubmitError(f"KFP API at {api.host}: uploaded pipeline {pipeline.pipeline_id} has no version")
        progress(f"Uploaded new pipeline '{pipeline_name}' ({pipeline.pipeline_id}) from {package}; its first "
                 f"version is named '{version.display_name}' by the server")
        return pipeline.pipeline_id, version.pipeline_version_id, version.display_name

    pipeline_id = found[0].pipeline_id
    version = _find_version(api, pipeline_id, wanted)
    if version is None and version_name is None:
        # The same file may be the pipeline's first version, which the server named after the pipeline.
        first = _find_version(api, pipeline_id, pipeline_name)
        if first is not None and _recorded_digest(first.description) == digest:
            version = first
    if version is not None:
        recorded = _recorded_digest(version.description)
        if recorded is not None and recorded != digest:
            raise SubmitError(f"KFP API at {api.host}: pipeline '{pipeline_name}' already has a version "
                              f"'{version.display_name}' built from a different file (sha256 {recorded[:12]}, "
                              f"{package} is {digest[:12]}); choose another --version, or omit it to name the "
                              f"version after the file's digest")
        note = "" if recorded else " (it records no digest, so its contents could not be compared with the file)"
        progress(f"Pipeline '{pipeline_name}' ({pipeline_id}) already has version '{version.display_name}' "
                 f"({version.pipeline_version_id}) for this file; reusing it{note}")
        return pipeline_id, version.pipeline_version_id, version.display_name

    version = api.call(f"POST {API}/pipelines/upload_version", api.client.upload_pipeline_version,
                       pipeline_package_path=str(package), pipeline_version_name=wanted,
                       pipeline_id=pipeline_id, description=description)
    progress(f"Uploaded version '{wanted}' ({version.pipeline_version_id}) of pipeline '{pipeline_name}' "
             f"({pipeline_id}) from {package}")
    return pipeline_id, version.pipeline_version_id, wanted


def _follow(api: _Api, run_id: str, run_url: str, timeout_seconds: float, poll_seconds: float,
            progress: Callable[[str], None]) -> tuple[str, int, str]:
    """Poll the run until a terminal state or the timeout: (last state, exit code, message).

    Polls get_run rather than kfp's wait_for_run_completion: that one reports no state changes and
    does not stop on CANCELED (its terminal states are succeeded/failed/skipped/error).
    """
    started = time.monotonic()
    last_state = None
    while True:
        run = api.call(f"GET {API}/runs/{run_id}", api.client.get_run, run_id)
        state = run.state or "RUNTIME_STATE_UNSPECIFIED"
        elapsed = time.monotonic() - started
        if state != last_state:
            progress(f"Run {run_id}: {state} after {elapsed:.0f}s")
            last_state = state
        if state == "SUCCEEDED":
            return state, EXIT_SUCCEEDED, f"Run {run_id} SUCCEEDED after {elapsed:.0f}s: {run_url}"
        if state in TERMINAL_STATES:
            reason = f": {run.error.message}" if run.error is not None and run.error.message else ""
            return state, EXIT_FAILED, f"Run {run_id} ended {state}{reason} (see {run_url})"
        if elapsed >= timeout_seconds:
            return state, EXIT_TIMEOUT, (f"Run {run_id} still {state} after the {timeout_seconds:g}s timeout; it keeps "
                                         f"running on the cluster: {run_url}")
        time.sleep(max(0.0, min(poll_seconds, timeout_seconds - elapsed)))


# ---- command line -------------------------------------------------------------------------------

def add_submit_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `portfolio-mlops pipeline submit`."""
    parser.add_argument("--host", required=True, metavar="URL",
                        help="KFP API endpoint, e.g. http://127.0.0.1:8888 (port-forwarded ml-pipeline service)")
    parser.add_argument("--package", default=str(DEFAULT_PACKAGE), metavar="YAML",
                        help=f"compiled pipeline (default: pipelines/{names.COMPILED_PIPELINE})")
    parser.add_argument("--experiment", default=DEFAULT_EXPERIMENT, metavar="NAME",
                        help=f"experiment, created if missing (default: {DEFAULT_EXPERIMENT})")
    parser.add_argument("--pipeline-name", default=DEFAULT_PIPELINE_NAME, metavar="NAME",
                        help=f"pipeline to upload or add a version to (default: {DEFAULT_PIPELINE_NAME})")
    parser.add_argument("--version", dest="version_name", metavar="NAME",
                        help="version name (default: sha256-<12 hex digits> of the package, so the same file "
                             "reuses its version)")
    parser.add_argument("--run-name", metavar="NAME", help="run name (default: pipeline, version and UTC time)")
    parser.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                        help="pipeline parameter; VALUE is read as JSON when it parses (20, true, '[\"ridge\"]'), "
                             "else as text; string parameters always take the text. Repeatable.")
    parser.add_argument("--cron", metavar="EXPR",
                        help="also create a recurring run; KFP cron has 6 fields, seconds first: "
                             "'0 0 6 * * 1-5' = 06:00 on weekdays")
    parser.add_argument("--namespace", metavar="NS", help="Kubernetes namespace (multi-user deployments)")
    parser.add_argument("--wait", action="store_true",
                        help="follow the run; exit 0 succeeded, 1 failed or canceled, 2 timed out")
    parser.add_argument("--timeout", type=float, default=3600, metavar="SECONDS",
                        help="with --wait: give up following after this long (default 3600)")


def parse_params(pairs: list[str], declared: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """KEY=VALUE pairs -> typed values: JSON when VALUE parses, else the text.

    A parameter the package declares STRING keeps the text as typed, so `--param tag=2024` stays "2024".
    """
    declared = declared or {}
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--param {pair!r}: expected KEY=VALUE, e.g. --param top_n=20")
        if declared.get(key, {}).get("parameterType") == "STRING":
            params[key] = text
            continue
        try:
            params[key] = json.loads(text)
        except ValueError:
            params[key] = text
    return params


def run_submit(args: argparse.Namespace) -> int:
    """Run `pipeline submit`; progress on stderr, the outcome on stdout. Returns the exit code."""
    package = Path(args.package)
    params = parse_params(args.param, declared_parameters(package))
    result = submit(args.host, package, args.pipeline_name, args.experiment, params,
                    version_name=args.version_name, run_name=args.run_name, cron=args.cron, wait=args.wait,
                    timeout_seconds=args.timeout, namespace=args.namespace,
                    progress=lambda text: print(text, file=sys.stderr, flush=True))
    print(result.message)
    return result.exit_code
