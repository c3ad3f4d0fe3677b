from setuptools import find_packages, setup

setup(
    name="kdzoo",
    version="0.1.0",
    description="Knowledge distillation for Keras 3: a model zoo, patient & consistent "
                "teaching (FunMatch), self distillation, and paper recipes.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    # The model cards and kdzoo's own weights live in the repository's top-level
    # pretrained/ and are installed as kdzoo/pretrained (kdzoo.zoo.registry finds either).
    # The recipes (recipes/) are installed as kdzoo/recipes, for `kdzoo recipe NAME`.
    packages=find_packages(include=["kdzoo", "kdzoo.*"]) + ["kdzoo.pretrained",
                                                             "kdzoo.recipes"],
    package_dir={"kdzoo.pretrained": "pretrained", "kdzoo.recipes": "recipes"},
    package_data={"kdzoo.pretrained": ["*.json", "*.weights.h5"], "kdzoo.recipes": ["*.py"]},
    entry_points={"console_scripts": ["kdzoo = kdzoo.cli:main"]},
    install_requires=[
        # TensorFlow itself comes from an extra: [cpu] or [gpu] (see README).
        "keras>=3.12",
        "tensorflow-datasets>=4.9.8",
        "importlib_resources",  # TFDS 4.9.10 imports it when it builds a dataset
        "absl-py",
        "numpy",
        "h5py",
        "matplotlib",
        "tensorboard",  # TensorBoard logs from kdzoo.train (no longer pulled in by TF)
    ],
    extras_require={
        # [cpu] asks for the standard `tensorflow` wheel (it runs on CPU): keras-hub's
        # tensorflow-text requires `tensorflow` by that name, and with `tensorflow-cpu`
        # here `.[cpu,hub]` would install two TensorFlow distributions into one
        # environment, each overwriting the other's files.
        "cpu": ["tensorflow>=2.16"],
        "gpu": ["tensorflow[and-cuda]>=2.16"],
        # keras-hub presets as teachers/students: kdzoo.from_keras_hub, kdzoo.load("hub:...").
        "hub": ["keras-hub>=0.32"],
        # The Fashion-MNIST sections study, section 3.8 (out-of-domain images):
        # sklearn.datasets.load_digits and skimage.data (recipes/fashion_mnist_sections.py).
        "study": ["scikit-learn", "scikit-image"],
        "test": ["pytest", "pytest-xdist"],
    },
    license="Apache-2.0",
)
