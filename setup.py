"""
vorchd: a virtualization orchestration daemon (twistd plugin) over libvirt and Redis.
"""

from setuptools import find_packages, setup

setup(
    name="vorchd",
    version="0.1.0",
    description="Virtualization orchestration daemon: the seed REST API over libvirt and Redis",
    python_requires=">=3.11",
    packages=find_packages(include=["vorchd", "vorchd.*"]) + ["twisted.plugins"],
    package_data={
        "twisted": ["plugins/vorchd_plugin.py"],
        "vorchd.ui": ["*.html", "*.js", "*.css"],
        "vorchd.store": ["lua/*.lua"],
    },
    install_requires=[
        "Twisted>=23.10",
        "klein>=23.5",
        "txredisapi>=1.4.10",
        "libvirt-python>=9.0",
        "attrs>=23.1",
        "zope.interface>=6.0",
        "numpy>=1.26",
        # txredisapi parses replies with hiredis when it is installed (much less work
        # on the reactor thread per reply than its pure-Python parser).
        "hiredis>=2.0",
        # vorchd-sim --plot only.
        "matplotlib>=3.7",
    ],
    extras_require={
        "test": [
            "pytest>=8",
            "hypothesis>=6.100",
            "treq>=23.11",
            "ruff>=0.6",
            "openapi-spec-validator>=0.7",
            "prometheus-client>=0.17",
            "selenium>=4.11",
        ],
    },
    entry_points={
        "console_scripts": [
            "vorchd-admin = vorchd.cli.admin:main",
            "vorch = vorchd.cli.vorch:main",
            "vorchd-sim = vorchd.sim.cli:main",
        ]
    },
)
