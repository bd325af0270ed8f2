"""python -m mert_jax.cli.params, in process: the table's backbone and total rows carry the pinned
counts (tests/expected.py)."""

import pytest

from mert_jax.cli import params as params_cli
from tests.expected import BACKBONE_PARAMS, TOTAL_PARAMS


@pytest.mark.parametrize("size", ["95m", "330m"])
def test_param_table(size: str, capsys) -> None:
  params_cli.main([f"--size={size}"])
  out = capsys.readouterr().out
  assert out.startswith(f"MERT {size}: D=")
  rows = {line[:62].strip(): line[62:].strip() for line in out.splitlines()[1:]}
  assert rows["backbone (= transformers.HubertModel)"] == f"{BACKBONE_PARAMS[size]:,}"
  assert rows["total"] == f"{TOTAL_PARAMS[size]:,}"


def test_unknown_size_is_refused(capsys) -> None:
  with pytest.raises(SystemExit) as e:
    params_cli.main(["--size=7b"])
  assert e.value.code == 2 and "invalid choice: '7b'" in capsys.readouterr().err
