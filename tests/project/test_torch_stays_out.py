"""The processes that only call the depth model never load torch or transformers (a few hundred MB
each): a processing task's module, the scheduler, the gateway's app builder and a handle to the
depth deployment, imported and used in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_callers_of_the_depth_model_do_not_import_torch(tmp_path):
    script = textwrap.dedent(f"""
        import sys
        from ray.serve.handle import DeploymentHandle

        from cluster.config.names import APP_NAME, DEPTH_DEPLOYMENT
        from cluster.config.settings import Settings
        from cluster.work import scheduler, tasks
        from serve_app.app import build_depthmill_app

        app = build_depthmill_app(Settings(model="tiny", home={str(tmp_path)!r}))
        handle = DeploymentHandle(DEPTH_DEPLOYMENT, APP_NAME)
        depth = tasks.serve_depth(APP_NAME)
        loaded = sorted(m for m in ("torch", "transformers") if m in sys.modules)
        print(",".join(loaded) or "none")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "none"


def test_loading_the_model_does_import_torch(tmp_path):
    """The check above can fail: the same interpreter loads torch once the model is loaded."""
    script = textwrap.dedent(f"""
        import sys
        from cluster.config.settings import Settings
        from cluster.model.options import ModelOptions

        ModelOptions.from_settings(Settings(model="tiny", home={str(tmp_path)!r})).load()
        print("torch" in sys.modules)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "True"
