fn main() -> aya_build::Result<()> {
    // Declares the `bpf_target_arch` cfg (set by aya-build when it builds us) so the
    // arch-specific argument readers type-check on the host too.
    aya_build::emit_bpf_target_arch_cfg()
}
