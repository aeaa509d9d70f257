//! Link libtorch_cuda even though no symbol of it is referenced directly.
//!
//! rustc links with `--as-needed`, which drops `libtorch_cuda.so`; without it libtorch
//! registers no CUDA backend and tch silently reports CUDA as unavailable. We add
//! `--no-as-needed` around it when the library exists, and an rpath to the torch lib
//! folder so the binary runs without LD_LIBRARY_PATH on the machine that built it.
fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    let lib_dir = std::env::var("DEP_TCH_LIBTORCH_LIB")
        .ok()
        .or_else(|| std::env::var("DEP_TORCH_SYS_LIBTORCH_LIB").ok());
    let Some(lib_dir) = lib_dir else {
        println!("cargo:warning=torch lib folder unknown (DEP_TCH_LIBTORCH_LIB unset); CUDA may be unavailable");
        return;
    };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib_dir}");
    for lib in ["torch_cuda", "c10_cuda"] {
        if std::path::Path::new(&lib_dir)
            .join(format!("lib{lib}.so"))
            .exists()
        {
            println!("cargo:rustc-link-search=native={lib_dir}");
            println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
            println!("cargo:rustc-link-arg=-l{lib}");
            println!("cargo:rustc-link-arg=-Wl,--as-needed");
        }
    }
}
