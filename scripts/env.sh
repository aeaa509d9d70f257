# Sourced by the Makefile and CI: the project's virtualenv (torch 2.11.0) supplies libtorch.
VENV=${JETINFER_VENV:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/.venv}
export VIRTUAL_ENV="$VENV"
export PATH="$VENV/bin:$PATH"
export LIBTORCH_USE_PYTORCH=1
export LIBTORCH_BYPASS_VERSION_CHECK=${LIBTORCH_BYPASS_VERSION_CHECK:-0}
TORCH_LIB=$("$VENV/bin/python" -c 'import torch,os;print(os.path.dirname(torch.__file__)+"/lib")' 2>/dev/null)
export LD_LIBRARY_PATH="$TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
