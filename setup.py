from setuptools import find_packages, setup

with open("README.md", encoding="utf-8") as f:
    long_description = f.read()

setup(
    name="paddleseg_unet",
    version="0.1.0",
    description="UNet semantic segmentation on PaddlePaddle: train, evaluate and deploy, "
                "compatible with PaddleSeg's configs and weights",
    long_description=long_description,
    long_description_content_type="text/markdown",
    # The configs ship inside the package (paddleseg_unet/configs in a wheel), so that
    # --config takes a name after a plain pip install; a checkout reads configs/ itself.
    packages=find_packages(include=["paddleseg_unet", "paddleseg_unet.*"])
    + ["paddleseg_unet.configs"],
    package_dir={"paddleseg_unet.configs": "configs"},
    package_data={"paddleseg_unet.configs": ["*.yml", "*/*.yml"]},
    python_requires=">=3.9",
    install_requires=[
        "numpy>=1.23",
        "opencv-python-headless>=4.7",
        "pyyaml>=5.4",
        "visualdl>=2.5",
        "tqdm>=4.60",
        # Reads the GIF, TIFF and PPM files the official retina archives ship (converters only).
        "Pillow>=9.0",
        # Training curves (tools/plot_log.py) and the ROC/PR figures of tools/val.py --curves.
        "matplotlib>=3.5",
    ],
    extras_require={
        "cpu": ["paddlepaddle>=3.0,<4"],
        "gpu": ["paddlepaddle-gpu>=3.0,<4"],
        # Export to ONNX and the ONNX Runtime backend (the fast CPU path).
        "onnx": ["paddle2onnx>=2.0,<3", "onnxruntime>=1.17"],
        # scikit-learn is the independent reference for AUC-ROC and Kappa in the tests;
        # the export tests need the ONNX tools too.
        "test": ["pytest>=7", "scikit-learn>=1.2", "paddle2onnx>=2.0,<3", "onnxruntime>=1.17"],
    },
    entry_points={"console_scripts": ["paddleseg-unet = paddleseg_unet.apis.commands:main"]},
)
