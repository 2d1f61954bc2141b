"""The Numba switches qsim relies on for exactness (see qsim/jit.py)."""
import os
import subprocess
import sys


def _fresh(code: str, **env: str) -> str:
    """Run ``code`` in a fresh interpreter (module import order matters) and return its stdout."""
    full_env = {k: v for k, v in os.environ.items() if k != "NUMBA_DISABLE_INTEL_SVML"}
    full_env.update(env)
    out = subprocess.run([sys.executable, "-c", code], env=full_env, capture_output=True,
                         text=True, check=True)
    return out.stdout.strip()


def test_importing_qsim_disables_svml_in_numba():
    # Numba reads the switch at import: after `import qsim` its config must say SVML is off,
    # whether or not icc_rt is installed on this machine.
    assert _fresh("import qsim, numba; print(numba.config.DISABLE_INTEL_SVML, "
                  "numba.config.USING_SVML)") == "1 False"


def test_a_user_choice_is_kept():
    # setdefault: an explicit user setting wins (and, with icc_rt present, qsim then warns)
    assert _fresh("import qsim, numba; print(numba.config.DISABLE_INTEL_SVML)",
                  NUMBA_DISABLE_INTEL_SVML="0") == "0"
