"""Fixtures shared by the tests, and the two test tiers.

The full suite (``python -m pytest``, what CI runs) runs every test. The quick local loop,
``python -m pytest -m "not slow" -n 2``, leaves out the tests marked ``slow``; it is meant to
take under 3 minutes on 2 cores. Its policy: it keeps at least one case of every feature on
every backend that runs here: the cpu cases, one cuda-emu run per feature, one nvcc build per
template family. The full suite alone runs

* tests marked ``slow`` where they are written (MPI jobs, full-size networks on cuda-emu,
  build-cache races, long learning runs, the benchmark scripts' smoke runs);
* every case built for sm_90 (the quick loop builds CUDA for sm_80 only);
* the repeats listed in ``QUICK_LOOP_KEEPS`` and ``FULL_SUITE_ONLY`` below: more
  parametrisations of a feature already checked in the quick loop (other models, losses, batch
  sizes, options), its cuda-emu runs where another cuda-emu run of the feature stays, nvcc
  builds of a family the quick loop builds already, and learning runs. Each entry says why;
* the examples of docs/ that train a network or build for cuda-emu (``DOCS_FULL_SUITE_ONLY``;
  the README's examples all run in the quick loop).

Every test of the quick loop compiles into one cache for the whole session, shared by the
xdist workers, so a program that several tests generate identically is compiled once.
"""

import os
import re
import shutil

import pytest


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Tests build into their own cache unless the caller chose one (CI reuses it). One cache for the whole
    session, shared by its xdist workers (the build cache locks each entry while it is built): a program that
    several tests generate identically is compiled once; with SPIKEFORGE_CACHE_DIR set, once for every session
    (the README's quick local loop)."""
    if "SPIKEFORGE_CACHE_DIR" not in os.environ:
        root = tmp_path_factory.getbasetemp()
        if os.environ.get("PYTEST_XDIST_WORKER"):  # a worker's basetemp lies in the session's
            root = root.parent
        cache = root / "spikeforge-cache"
        cache.mkdir(exist_ok=True)
        os.environ["SPIKEFORGE_CACHE_DIR"] = str(cache)
    yield


def nvcc_path():
    return shutil.which("nvcc") or (
        "/usr/local/cuda/bin/nvcc" if os.path.exists("/usr/local/cuda/bin/nvcc") else None
    )


def gpu_available() -> bool:
    try:
        from spikeforge.runtime.cuda import import_pycuda

        import_pycuda()
        return True
    except Exception:
        return False


BACKENDS = ["cpu", "cuda-emu", pytest.param("cuda", marks=pytest.mark.gpu)]
# The same, with cuda-emu marked slow, for tests whose cuda-emu run takes seconds (the emulator runs each CUDA
# thread as a fiber): @pytest.mark.parametrize("backend", BACKENDS_SLOW_EMU, indirect=True)
BACKENDS_SLOW_EMU = ["cpu", pytest.param("cuda-emu", marks=pytest.mark.slow),
                     pytest.param("cuda", marks=pytest.mark.gpu)]


@pytest.fixture(params=BACKENDS)
def backend(request):
    """Every backend that can run here: the numerics tests run on each of them."""
    if request.param == "cuda" and not gpu_available():
        pytest.skip("needs a CUDA GPU and pycuda")
    return request.param


# Parametrised tests of which the quick loop keeps the cases named (their ids in brackets);
# their other cases are slow. {test: (the ids kept, why the others can wait for the full suite)}
QUICK_LOOP_KEEPS = {
    "tests/test_training_compiler.py::test_compiled_gradients_equal_numpy_eprop": (
        ("lsnn-mse-B1", "alif-xent-B1", "lif_subtractive-mse-B1", "lsnn-xent-B8"),
        "each model and each loss once, a batch of 8 once"),
    "tests/test_parallel_rules.py::test_kernels_match_the_reference_in_double": (
        ("threshold-None", "first_crossing-None", "first_crossing_fastsnn-None", "bernoulli_st-None",
         "bernoulli_spsn-None", "gumbel_hard-None", "gumbel_soft-None", "threshold-reg1"),
        "every spike rule without the rate regulariser, the regulariser once"),
    "tests/test_eprop_kernel.py::test_generated_eprop_equals_numpy_eprop": (
        ("recurrent-xent-LIF", "recurrent-mse-ALIF", "feedforward-mse-LIF_const", "feedforward-xent-ALIF_const"),
        "every model, loss and topology once"),
    "tests/test_eprop_kernel.py::test_generated_gradient_equals_finite_differences_on_three_neurons": (
        ("ALIF-cpu", "LIF_const-cpu"), "the adaptive and a constant-parameter model; the others in the test above"),
    "tests/test_eprop_kernel.py::test_float_agrees_with_reference_to_float_precision": (
        ("ALIF",), "float precision once; ALIF_const differs in its parameters only"),
    "tests/test_eprop_izhikevich_reference.py::test_compiled_gradients_equal_the_reference_on_cpu": (
        ("xent-B1-rec", "mse-B4-ff"), "each loss, batch size and topology once"),
    "tests/test_eprop_mixed.py::test_generated_eprop_with_per_neuron_beta_equals_numpy_eprop": (
        ("mse-cpu",), "one loss; the losses are checked in test_eprop_kernel"),
    "tests/test_parallel_kernels.py::test_forward_and_gradients_match_the_numpy_reference_in_double": (
        ("xent",), "one loss; the losses are checked in test_parallel_rules"),
    "tests/test_brian2_examples.py::test_port_runs_with_json_rates": (
        ("brunel2000_A.yaml", "cobahh.yaml", "gap_junctions.yaml", "izhikevich2003.yaml", "nmda.yaml",
         "stdp_song2000.yaml"),
        "Brunel's network once: B, C and D are the same 12,500 neurons with other parameters"),
    "tests/test_timed_array.py::test_piecewise_constant_drive_matches_the_exact_solution": (
        ("cpu-one value", "cpu-per neuron", "cpu-per instance", "cuda-emu-per instance"),
        "every layout on cpu, the one per instance on cuda-emu"),
    "tests/test_threads.py::test_stdp_results_are_the_same_on_one_and_two_threads": (
        ("4",), "the batch of 4 threads its instances; batch size 1 repeats it"),
    "tests/test_pathways.py::test_stdp_split_into_pathways_equals_the_built_in_rule": (
        ("cpu-sum",), "one batch reduction; the reductions are checked in test_stdp"),
    "tests/test_stdp.py::test_identical_instances_give_exactly_the_batch_1_result": (
        ("cpu-mean",), "one reduction; max and sum are checked by the other tests of the file"),
    "tests/test_trainer.py::test_an_untrained_classifier_reports_about_ln_c": (
        ("5",), "one number of classes"),
    "tests/test_integrate_complex.py::test_the_cuda_kernels_compile_with_nvcc": (
        ("float",), "one nvcc build per template family"),
    "tests/test_recording_options.py::test_neuron_slices": (
        ("selection0-expected0", "selection2-expected2"), "a selection given as a dict and as a slice"),
    "tests/test_readouts.py::test_compiled_gradients_equal_numpy": (
        ("per_step-xent-B1", "sum-mse-B1", "mean-xent-B1", "max-mse-B1", "last-xent-B1", "per_step-mse-B3"),
        "every readout at batch size 1 with one of the losses (each loss several times), a batch of 3 once"),
    "tests/test_training_compiler.py::test_two_adam_steps_equal_numpy": (
        ("symmetric",), "one feedback; random feedback: test_eprop_kernel's test_random_feedback_uses_its_matrix"),
}

# Tests (every case) or single cases of them that only the full suite runs: {node id: why}
FULL_SUITE_ONLY = {
    "tests/test_training_delays.py::test_equal_per_synapse_delays_equal_a_projection_wide_delay_bit_for_bit":
        "equal delays are a special case of test_mixed_per_synapse_delays_equal_one_projection_per_delay",
    "tests/test_training_instances.py::test_a_dynamic_parameter_changes_between_batches_without_recompiling":
        "three training programs built into a cache of its own; a new value without recompiling: test_heterogeneous's "
        "test_set_param_changes_a_dynamic_parameter_without_recompiling, the training's checks of it: "
        "test_refusals_name_the_population_and_the_parameter",
    "tests/test_training_delays.py::test_per_synapse_delays_on_a_value_input_equal_inputs_shifted_by_them":
        "per-synapse delays: test_mixed_per_synapse_delays_equal_one_projection_per_delay; delayed inputs: "
        "test_training_compiler's test_an_input_delay_equals_inputs_shifted_by_it",
    "tests/test_training_compiler.py::test_compiled_network_learns_a_two_class_task":
        "a learning run; the gradients and optimiser steps it follows are checked against numpy in the quick loop",
    "tests/test_eprop_mixed.py::test_uniform_arrays_give_the_scalar_gradients[cpu]":
        "per-neuron arrays: test_generated_eprop_with_per_neuron_beta_equals_numpy_eprop and "
        "test_alif_with_zero_beta_array_gives_the_lif_gradients",
    "tests/test_parallel_yaml.py::test_spike_rule_and_regulariser_of_a_job_equal_the_python_job":
        "three trainings; the rules' YAML: test_each_rule_and_its_options, a parallel job through the CLI: "
        "test_parallel_trainer's test_spikeforge_train_runs_a_parallel_job",
    "tests/test_nonfinite.py::test_diverging_euler_is_warned_after_the_run[cuda-emu]":
        "cuda-emu's checks stay in the quick loop through the file's other cuda-emu cases",
    "tests/test_poisson_input.py::test_increments_equal_weight_times_the_reference_draws[cuda-emu]":
        "cuda-emu's draws are compared with the cpu's bit for bit by test_cpu_and_cuda_emu_agree_exactly_in_float",
    "tests/test_poisson_input.py::test_lif_with_poisson_drive_cpu_equals_cuda_emu":
        "a second cpu = cuda-emu comparison; test_cpu_and_cuda_emu_agree_exactly_in_float stays",
    "tests/test_numerics.py::test_from_list_connectivity_and_explicit_weights[cuda-emu]":
        "the file's other cuda-emu cases stay; the connectivity is built on the host for every backend",
    "tests/test_cuda.py::test_eprop_training_kernels_compile_with_nvcc[sm_80]":
        "the training kernels' nvcc build: test_every_training_kernel_compiles_with_nvcc",
    "tests/test_training_instances.py::test_eligibility_kernels_with_values_per_instance_compile_with_nvcc":
        "the training kernels' nvcc build: test_every_training_kernel_compiles_with_nvcc",
    "tests/test_eprop_mixed.py::test_mixed_eprop_kernels_compile_with_nvcc":
        "the training kernels' nvcc build: test_every_training_kernel_compiles_with_nvcc",
    "tests/test_training_delays.py::test_per_synapse_delay_kernels_compile_with_nvcc[double]":
        "the training kernels' nvcc build: test_every_training_kernel_compiles_with_nvcc",
    "tests/test_readouts.py::test_a_trainer_learns_a_two_class_task_with_the_mean_readout":
        "a learning run; test_training_compiler's test_compiled_network_learns_a_two_class_task stays",
    "tests/test_parallel_trainer.py::test_fit_learns_above_chance":
        "a learning run; test_fit_equals_oracle_step_for_step checks fit step for step",
    "tests/test_trainer_compiler.py::test_the_new_yaml_form_checkpoints_and_resumes":
        "checkpoints: test_checkpoints_resume_on_the_compiler_path; the new form: "
        "test_spikeforge_train_runs_the_new_yaml_form",
}


# The examples of docs/ that train a network or build for cuda-emu (the README's run in the quick loop)
DOCS_FULL_SUITE_ONLY = re.compile(r'Trainer\(|backend="cuda-emu"')


def _slow_doc_block(item):
    """Why the quick loop leaves out this run of a documented example, or None."""
    from tests.test_docs import _python_blocks

    path, index = item.callspec.params["path"], item.callspec.params["index"]
    if path.parent.name == "docs" and DOCS_FULL_SUITE_ONLY.search(_python_blocks(path)[index]):
        return "a training run or a cuda-emu build: the features it shows are checked in the quick loop"
    return None


def _slow_reason(nodeid):
    """Why the quick loop leaves this test out, or None."""
    if "sm_90" in nodeid:
        return "the quick loop builds CUDA for sm_80 only"
    test, _, case = nodeid.partition("[")
    for key in (nodeid, test):
        if key in FULL_SUITE_ONLY:
            return FULL_SUITE_ONLY[key]
    if test in QUICK_LOOP_KEEPS and case:
        kept, why = QUICK_LOOP_KEEPS[test]
        return None if case[:-1] in kept else why
    return None


def pytest_collection_modifyitems(config, items):
    """Marks slow what the module docstring says the full suite alone runs."""
    for item in items:
        reason = _slow_reason(item.nodeid)
        if reason is None and item.nodeid.startswith("tests/test_docs.py::test_documented_python_example_runs["):
            reason = _slow_doc_block(item)
        if reason is not None:
            item.add_marker(pytest.mark.slow(reason=reason))
