from tests.search.conftest import hpsearch_command, run_hpsearch  # noqa: F401  the same CLI runner as tests/search
