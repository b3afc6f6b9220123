"""Beam pipeline options (item 7): an option Beam does not know is an error before
anything runs, naming the option and the closest valid one; Beam alone would log
"Discarding unparseable args" and run with defaults."""

import pytest

from pipelines.runners import BeamOptionError, check_pipeline_options
from pipelines import cli


@pytest.mark.parametrize("args, message", [
    (["--direct_num_worker", "2"],
     "unknown Beam pipeline option --direct_num_worker (did you mean --direct_num_workers?)"),
    (["--direct_num_worker=2"],
     "unknown Beam pipeline option --direct_num_worker (did you mean --direct_num_workers?)"),
    # Beam would even keep this one's value, as a string, under direct_num_workers.
    (["--direct-num-workers=2"],
     "unknown Beam pipeline option --direct-num-workers (did you mean --direct_num_workers?)"),
    (["--runer", "DaskRunner"], "unknown Beam pipeline option --runer (did you mean --runner?)"),
    (["--runner=DataflowRunner", "--temp-location", "gs://b/t"],
     "unknown Beam pipeline option --temp-location (did you mean --temp_location?)"),
    (["--runner", "DaskRunner", "--dask_client_adress", "tcp://h:8786"],
     "unknown Beam pipeline option --dask_client_adress (did you mean --dask_client_address?)"),
    (["--experimentz=a", "--direct_running_mod", "in_memory"],
     "unknown Beam pipeline options --experimentz (did you mean --experiment?); "
     "--direct_running_mod (did you mean --direct_running_mode?)"),
    (["--totally_unknown_option", "1"],
     "unknown Beam pipeline option --totally_unknown_option (prepro analyze --allow-unknown-beam-options "
     "passes unknown options on to Beam)"),
    (["-n", "2"], "unknown Beam pipeline option -n (Beam options start with '--')"),
    (["stray"], "unknown Beam pipeline option 'stray' (an argument that belongs to no option)"),
    (["--streaming", "stray"], "unknown Beam pipeline option 'stray' (an argument that belongs to no option)"),
])
def test_unknown_options_name_the_closest_valid_one(args, message):
    with pytest.raises(BeamOptionError) as err:
        check_pipeline_options(args)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


@pytest.mark.parametrize("args", [
    [],
    ["--direct_num_workers", "2"], ["--direct_num_workers=2", "--direct_running_mode=multi_processing"],
    ["--direct_running_mode", "in_memory"],
    ["--runner", "DataflowRunner", "--project", "p", "--region=europe-west4", "--temp_location", "gs://b/tmp",
     "--setup_file", "./setup.py", "--no_use_public_ips", "--max_num_workers=8", "--machine_type", "n2-standard-8"],
    ["--runner=FlinkRunner", "--flink_master", "flink:8081", "--parallelism", "4", "--environment_type=LOOPBACK"],
    ["--runner", "SparkRunner", "--spark_master_url", "spark://h:7077"],
    ["--runner", "PortableRunner", "--job_endpoint", "localhost:8099"],
    ["--runner", "DaskRunner", "--dask_client_address", "tcp://127.0.0.1:8786", "--dask_connection_timeout=5"],
    ["--runner", "apache_beam.runners.dask.dask_runner.DaskRunner", "--dask_client_address=tcp://h:1"],
    ["--experiments", "a", "--experiments=b", "--experiment", "c"],
    ["--save_main_session", "--pickle_library=cloudpickle", "--num_workers", "-1"],
])
def test_valid_options_of_every_runner_are_accepted(args):
    check_pipeline_options(args)


@pytest.mark.parametrize("script, block", [("dataflow/run.sh", "run"), ("flink/run.sh", None), ("spark/run.sh", None)])
def test_every_deploy_recipe_passes(script, block):
    from tests.test_deploy import _prepro_command
    _, beam_args = cli.build_parser().parse_known_args(["analyze", *_prepro_command(script, block)])
    assert beam_args
    check_pipeline_options(beam_args)


def test_options_of_a_runner_that_is_not_chosen_are_an_error():
    # Without --runner DaskRunner the job would run locally, ignoring the cluster.
    with pytest.raises(BeamOptionError, match=r"^--dask_client_address is an option of DaskRunner, but the "
                                              r"runner is FnApiRunner \(add --runner DaskRunner\)$"):
        check_pipeline_options(["--dask_client_address", "tcp://h:8786"])


@pytest.mark.parametrize("args, message", [
    (["--direct_num_workers=two"], "invalid Beam pipeline option: argument --direct_num_workers: "
                                   "invalid int value: 'two'"),
    (["--direct_running_mode", "fast"], "invalid Beam pipeline option: argument --direct_running_mode: "
                                        "invalid choice: 'fast'"),
    (["--direct_num_workers"], "invalid Beam pipeline option: argument --direct_num_workers: expected one argument"),
])
def test_values_beam_refuses_are_one_line_errors_not_a_usage_dump(args, message, capsys):
    with pytest.raises(BeamOptionError) as err:
        check_pipeline_options(args, allow_unknown=True)  # values are checked even then
    assert str(err.value).startswith(message)
    assert capsys.readouterr().err == ""


def test_the_opt_out_passes_unknown_names_to_beam():
    check_pipeline_options(["--my_runner_option", "1", "--other=2"], allow_unknown=True)


def test_the_api_refuses_before_writing(tmp_path):
    from pipelines.analyze import run_analyze
    from prepro.spec import spec_from_dict
    (tmp_path / "in.txt").write_text("a b\n")
    spec = spec_from_dict({"features": {"t": {"source": "text", "layer": "TextVectorization"}}})
    with pytest.raises(BeamOptionError, match="did you mean --direct_num_workers"):
        run_analyze(spec, [str(tmp_path / "in.txt")], "text", str(tmp_path / "out"),
                    pipeline_args=["--direct_num_worker=2"])
    assert not (tmp_path / "out").exists()


def _analyze(tmp_path, *beam_args):
    spec, data = tmp_path / "spec.yaml", tmp_path / "in.txt"
    spec.write_text("features:\n  t: {source: text, layer: TextVectorization}\n")
    data.write_text("the cat\nthe dog\n")
    return cli.main(["analyze", "--spec", str(spec), "--input", str(data), "--format", "text",
                     "--output", str(tmp_path / "out"), "--golden-rows", "0", *beam_args])


def test_cli_typo_is_exit_1_with_one_line_and_leaves_the_output_alone(tmp_path, capsys):
    assert _analyze(tmp_path, "--direct_num_worker", "2") == 1
    assert capsys.readouterr().err.splitlines() == [
        "prepro analyze: error: unknown Beam pipeline option --direct_num_worker (did you mean "
        "--direct_num_workers?)"]
    assert not (tmp_path / "out").exists()  # no job started, nothing written
    # With the opt-out the job runs (Beam discards the option, as it always did)...
    assert _analyze(tmp_path, "--allow-unknown-beam-options", "--some_runners_option=1") == 0
    manifest = (tmp_path / "out" / "manifest.json").read_bytes()
    capsys.readouterr()
    # ...and a later typo leaves that artifact as it was (not even invalidated).
    assert _analyze(tmp_path, "--direct_running_mode=multi_procesing") == 1
    assert "invalid choice: 'multi_procesing'" in capsys.readouterr().err
    assert (tmp_path / "out" / "manifest.json").read_bytes() == manifest
