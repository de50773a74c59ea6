#!/bin/sh
# Build one image's virtualenv in /opt/venv and strip it; run by the Dockerfile's venv-* stages only.
#
#   image-venv.sh --extra ingest --kfp-executor           the package with one extra, + kfp's executor
#   image-venv.sh --requirements 'mlflow[auth]' boto3 ... packages only (the MLflow server)
#   options: --keep-record (keep .dist-info/RECORD: MLflow infers a model's pip requirements from it)
#            --drop PKG    (uninstall a dependency the image never imports; repeatable)
#
# Everything is pinned by /build/constraints.txt.
set -eu

EXTRA=""
KFP_EXECUTOR=0
KEEP_RECORD=0
DROP=""
REQUIREMENTS=""
while [ $# -gt 0 ]; do
    case "$1" in
        --extra) EXTRA=$2; shift 2 ;;
        --kfp-executor) KFP_EXECUTOR=1; shift ;;
        --keep-record) KEEP_RECORD=1; shift ;;
        --drop) DROP="$DROP $2"; shift 2 ;;
        --requirements) shift; REQUIREMENTS="$*"; break ;;
        *) echo "image-venv.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done

python3 -m venv /opt/venv
PIP="/opt/venv/bin/pip --no-input"
if [ -n "$EXTRA" ]; then
    WHEEL=$(ls /wheels/portfolio_mlops-*.whl)
    $PIP install --no-compile -c /build/constraints.txt "${WHEEL}[$EXTRA]"
fi
if [ -n "$REQUIREMENTS" ]; then
    # shellcheck disable=SC2086  # a list of requirement specifiers
    $PIP install --no-compile -c /build/constraints.txt $REQUIREMENTS
fi
if [ "$KFP_EXECUTOR" = 1 ]; then
    # A step's container runs `_KFP_RUNTIME=true python3 -m kfp.dsl.executor_main`, which imports only
    # kfp.dsl and the standard library (kfp/__init__.py and kfp/dsl/__init__.py skip the client and the
    # compiler under _KFP_RUNTIME): kfp's own dependencies (kubernetes, google-cloud-*, ...) are not needed.
    $PIP install --no-compile --no-deps -c /build/constraints.txt kfp
fi
if [ -n "$DROP" ]; then
    # shellcheck disable=SC2086
    $PIP uninstall --yes $DROP
fi

SITE=/opt/venv/lib/python3.11/site-packages
# pip, setuptools and wheel: the image never installs anything.
$PIP uninstall --yes pip setuptools wheel >/dev/null 2>&1 || rm -rf "$SITE"/pip "$SITE"/pip-*.dist-info
rm -rf "$SITE"/setuptools "$SITE"/setuptools-*.dist-info "$SITE"/pkg_resources "$SITE"/_distutils_hack \
       "$SITE"/distutils-precedence.pth /opt/venv/bin/pip*
# Test suites, bytecode, C/Cython sources and headers, type stubs: never imported at run time.
find "$SITE" -depth -type d \( -name tests -o -name __pycache__ \) -exec rm -rf {} +
find "$SITE" -type f \( -name '*.pyx' -o -name '*.pxd' -o -name '*.pxi' -o -name '*.pyi' -o -name '*.c' \
     -o -name '*.cc' -o -name '*.cpp' -o -name '*.h' -o -name '*.hpp' \) -delete
rm -rf "$SITE"/numpy/_core/include "$SITE"/numpy/_core/lib/pkgconfig "$SITE"/numpy/f2py/src
if [ -d "$SITE/pyarrow" ]; then
    # pyarrow: Flight (RPC) is never imported and nothing else links it (readelf -d; unlike Substrait,
    # which every extension module links); headers and the C++ sources of the Cython layer: build time only.
    rm -rf "$SITE"/pyarrow/include "$SITE"/pyarrow/src "$SITE"/pyarrow/libarrow_flight.so* \
           "$SITE"/pyarrow/libarrow_python_flight.so* "$SITE"/pyarrow/_flight*.so "$SITE"/pyarrow/flight.py \
           "$SITE"/pyarrow/_pyarrow_cpp_tests*.so
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
if command -v strip >/dev/null; then
    # Symbol tables are for debuggers and linkers, not for loading. Not the libraries auditwheel grafted
    # into *.libs/ (patchelf rewrote them; strip after patchelf can corrupt a library).
    find "$SITE" -path '*.libs' -prune -o -type f -name '*.so*' -exec strip --strip-unneeded {} + 2>/dev/null || true
fi
if [ "$KEEP_RECORD" = 0 ]; then
    # The list of installed files, for `pip uninstall`; the image has no pip.
    find "$SITE" -path '*.dist-info/RECORD' -delete
fi
du -sh /opt/venv
