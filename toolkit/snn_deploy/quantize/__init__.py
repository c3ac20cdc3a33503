"""Stage 3: NIR graph + Profile -> Deployment (fixed-point model for one hardware profile)."""
