"""Triton kernels and their launchers. Import only after deciding on TRITON_INTERPRET (Triton reads it at import)."""
