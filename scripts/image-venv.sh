#!/bin/sh
# Build one image's virtualenv in /opt/venv and strip it; run by the Dockerfile's deps-*/venv-* stages only.
#
#   image-venv.sh deps EXTRA [--kfp-executor] [--drop PKG ...]
#       a new venv with the requirements of the package's extra EXTRA (read from /build/pyproject.toml),
#       not the package itself: this layer depends on pyproject.toml and constraints.txt only, so an
#       edit of our sources does not reinstall pandas, scikit-learn or MLflow.
#   image-venv.sh package
#       the package wheel (/wheels) into that venv without dependencies, then the final clean-up.
#   image-venv.sh requirements [--drop PKG ...] SPEC ...
#       a new venv with these packages only (the MLflow server), cleaned up.
#
#   --kfp-executor  + kfp without its dependencies (what a step's container runs)
#   --mlflow-client MLflow's client side without what only Databricks, Google Cloud and git use (below)
#   --drop PKG      uninstall a dependency the image never imports (repeatable)
#
# Everything is pinned by /build/constraints.txt.
set -eu

MODE=${1:?usage: image-venv.sh deps EXTRA ... | package | requirements SPEC ...}
shift
EXTRA=""
if [ "$MODE" = deps ]; then EXTRA=${1:?image-venv.sh deps: which extra?}; shift; fi
KFP_EXECUTOR=0
DROP=""
while [ $# -gt 0 ]; do
    case "$1" in
        --kfp-executor) KFP_EXECUTOR=1; shift ;;
        # google-auth (and with it pyasn1*, cryptography, cffi) is loaded by databricks.sdk's credential
        # providers, which MLflow imports only for databricks:// URIs or inside Databricks; GitPython serves
        # the git-commit tag of runs started from a checkout (MLflow skips it when git is missing). The
        # databricks-sdk package itself stays: `import mlflow` asks importlib for `databricks.agents`, which
        # needs the `databricks` package to exist. Neither dropped part is imported on our path (an http://
        # tracking server, models:/ URIs); the DockerRunner pipeline run and the cluster harness run the
        # images that use this end to end.
        --mlflow-client) DROP="$DROP google-auth pyasn1-modules pyasn1 cryptography cffi pycparser gitpython gitdb smmap"
                         shift ;;
        --drop) DROP="$DROP $2"; shift 2 ;;
        --*) echo "image-venv.sh: unknown option $1" >&2; exit 2 ;;
        *) break ;;
    esac
done

SITE=/opt/venv/lib/python3.11/site-packages
PIP="/opt/venv/bin/pip --no-input"

requirements_of() {  # requirements_of EXTRA: the extra's requirements, our own extras expanded
    python3 - "$1" <<'EOF'
import re, sys, tomllib
project = tomllib.load(open("/build/pyproject.toml", "rb"))["project"]
own = project["name"]
seen, out = set(), list(project["dependencies"])
def expand(extra):
    if extra in seen:
        return
    seen.add(extra)
    for req in project["optional-dependencies"][extra]:
        m = re.fullmatch(rf"{re.escape(own)}\[([^\]]+)\]", req.strip())
        if m:
            for inner in m.group(1).split(","):
                expand(inner.strip())
        else:
            out.append(req)
expand(sys.argv[1])
print("\n".join(dict.fromkeys(out)))
EOF
}

slim() {  # what no image loads at run time, from every package installed so far
    # Test suites, bytecode, C/Cython sources and headers, type stubs.
    find "$SITE" -depth -type d \( -name tests -o -name __pycache__ \) -exec rm -rf {} +
    find "$SITE" -type f \( -name '*.pyx' -o -name '*.pxd' -o -name '*.pxi' -o -name '*.pyi' -o -name '*.c' \
         -o -name '*.cc' -o -name '*.cpp' -o -name '*.h' -o -name '*.hpp' \) -delete
    # numpy's build-time parts: headers, static libraries, numpy.distutils. (Not f2py: it is in
    # numpy.__all__, and `from numpy import *`, which SciPy's array-API layer runs, imports it.)
    rm -rf "$SITE"/numpy/_core/include "$SITE"/numpy/_core/lib "$SITE"/numpy/random/lib "$SITE"/numpy/distutils
    # Cython/Tempita templates and static libraries of any wheel: build inputs.
    find "$SITE" -type f \( -name '*.tp' -o -name '*.a' \) -delete
    if [ -d "$SITE/pyarrow" ]; then
        # pyarrow: Flight (RPC) is never imported and nothing else links it (readelf -d; unlike Substrait,
        # which every extension module links); headers and the C++ sources of the Cython layer: build time.
        rm -rf "$SITE"/pyarrow/include "$SITE"/pyarrow/src "$SITE"/pyarrow/libarrow_flight.so* \
               "$SITE"/pyarrow/libarrow_python_flight.so* "$SITE"/pyarrow/_flight*.so "$SITE"/pyarrow/flight.py \
               "$SITE"/pyarrow/_pyarrow_cpp_tests*.so
        # Formats and filesystems we never touch; pyarrow.fs and pyarrow.dataset import each of them inside
        # try/except ImportError (they are optional in pyarrow's own builds). S3 stays.
        rm -rf "$SITE"/pyarrow/_azurefs*.so "$SITE"/pyarrow/_gcsfs*.so "$SITE"/pyarrow/_hdfs*.so \
               "$SITE"/pyarrow/_orc*.so "$SITE"/pyarrow/_dataset_orc*.so "$SITE"/pyarrow/orc.py \
               "$SITE"/pyarrow/_substrait*.so "$SITE"/pyarrow/substrait.py
        # The wheel ships each libarrow_python* library three times (wheels have no symlinks): keep the
        # soname (libX.so.N, what the extension modules load), make the other two links to it.
        for soname in "$SITE"/pyarrow/libarrow_python*.so.[0-9]*; do
            case "$soname" in *.so.*.*) continue ;; esac
            name=$(basename "$soname")
            for copy in "${soname%.so.*}.so" "$soname".*; do
                if [ -f "$copy" ] && [ ! -L "$copy" ]; then ln -sf "$name" "$copy"; fi
            done
        done
    fi
    if [ -d "$SITE/scipy" ]; then
        # SciPy subpackages that neither scikit-learn nor the SciPy subpackages it loads import (scipy's
        # __init__ loads submodules lazily, on attribute access). tests/test_image_trim.py re-checks this
        # against the installed sources, so an upgrade that starts importing one fails there, not in a pod.
        SCIPY_UNUSED="signal odr fftpack differentiate misc datasets"
        for sub in $SCIPY_UNUSED; do rm -rf "${SITE:?}/scipy/$sub"; done
    fi
    if [ -d "$SITE/matplotlib" ]; then
        # Sample data is for matplotlib's own examples (cbook.get_sample_data), never for our plots.
        rm -rf "$SITE"/matplotlib/mpl-data/sample_data
    fi
    if command -v strip >/dev/null; then
        # Symbol tables are for debuggers and linkers, not for loading. Not the libraries auditwheel grafted
        # into *.libs/ (patchelf rewrote them; strip after patchelf can corrupt a library).
        find "$SITE" -path '*.libs' -prune -o -type f -name '*.so*' -exec strip --strip-unneeded {} + 2>/dev/null || true
    fi
}

finish() {  # the image never installs anything: no pip; no install records
    $PIP uninstall --yes pip setuptools wheel >/dev/null 2>&1 || rm -rf "$SITE"/pip "$SITE"/pip-*.dist-info
    rm -rf "$SITE"/setuptools "$SITE"/setuptools-*.dist-info "$SITE"/pkg_resources "$SITE"/_distutils_hack \
           "$SITE"/distutils-precedence.pth /opt/venv/bin/pip*
    find "$SITE" -depth -type d -name __pycache__ -exec rm -rf {} +
    # The list of installed files, for `pip uninstall`; the image has no pip.
    find "$SITE" -path '*.dist-info/RECORD' -delete
    du -sh /opt/venv
}

drop() {
    if [ -n "$DROP" ]; then
        # shellcheck disable=SC2086
        $PIP uninstall --yes $DROP
    fi
}

case "$MODE" in
    deps)
        python3 -m venv /opt/venv
        requirements_of "$EXTRA" > /tmp/requirements.txt
        echo "image-venv.sh: [$EXTRA] requires: $(tr '\n' ' ' < /tmp/requirements.txt)"
        $PIP install --no-compile -c /build/constraints.txt -r /tmp/requirements.txt
        if [ "$KFP_EXECUTOR" = 1 ]; then
            # A step's container runs `_KFP_RUNTIME=true python3 -m kfp.dsl.executor_main`, which imports only
            # kfp.dsl and the standard library (kfp/__init__.py and kfp/dsl/__init__.py skip the client and
            # the compiler under _KFP_RUNTIME): kfp's own dependencies (kubernetes, google-cloud-*, ...) are
            # not needed.
            $PIP install --no-compile --no-deps -c /build/constraints.txt kfp
        fi
        drop
        slim
        ;;
    package)
        # --no-deps: the deps stage installed them; pip would otherwise resolve the extras again.
        $PIP install --no-compile --no-deps /wheels/portfolio_mlops-*.whl
        finish
        ;;
    requirements)
        python3 -m venv /opt/venv
        $PIP install --no-compile -c /build/constraints.txt "$@"
        drop
        slim
        finish
        ;;
    *) echo "image-venv.sh: unknown mode $MODE (deps, package or requirements)" >&2; exit 2 ;;
esac
