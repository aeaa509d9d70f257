# Sourced by the Makefile and CI: the project's virtualenv (torch 2.11.0) supplies libtorch.
VENV=${JETINFER_VENV:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/.venv}
export VIRTUAL_ENV="$VENV"
export PATH="$VENV/bin:$PATH"
export LIBTORCH_USE_PYTORCH=1
export LIBTORCH_BYPASS_VERSION_CHECK=${LIBTORCH_BYPASS_VERSION_CHECK:-0}
# torch's lib folder, found without importing torch (an import takes seconds; this is sourced
# before every build and test command).
TORCH_LIB=$("$VENV/bin/python" -c 'import importlib.util as u, os
s = u.find_spec("torch")
print(os.path.join(os.path.dirname(s.origin), "lib") if s else "")' 2>/dev/null)
if [ -n "$TORCH_LIB" ]; then
  export LD_LIBRARY_PATH="$TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
else
  # An empty entry in LD_LIBRARY_PATH would mean the current folder: leave it alone.
  echo "env.sh: no torch in $VENV: run scripts/setup.sh (or make setup) first" >&2
fi
