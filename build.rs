fn main() {
    // Exposes `Py_3_13` etc. so the FFI layer can gate on the Python version
    // (docs/design.md, trap 3, differs between 3.12 and 3.13).
    pyo3_build_config::use_pyo3_cfgs();
}
