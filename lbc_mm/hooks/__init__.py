"""mmengine hooks of lbc_mm."""
