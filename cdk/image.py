"""The machine image instances boot: official Debian 12 (the default) or Amazon
Linux 2023, the latest of either, found through its public SSM parameter.

Debian is the default because it is the userland the tests run the boot in
(tests/image/test_boot.py, a debootstrap root): the booted image and the tested
one are the same. Amazon Linux 2023 stays an option, installed the same way
(image/install.sh speaks apt and dnf), but its boot is not run by any test.
"""

from aws_cdk import aws_ec2 as ec2

DEBIAN = "debian"
AL2023 = "al2023"
IMAGES = (DEBIAN, AL2023)

#: Debian's public parameters for its latest Debian 12 AMIs, by CPU
#: (https://wiki.debian.org/Cloud/AmazonEC2Image).
DEBIAN_PARAMETER = "/aws/service/debian/release/bookworm/latest/{arch}"


def image_name(value: object) -> str:
    """A setting's image name, checked."""
    name = str(value).strip().lower()
    if name not in IMAGES:
        raise ValueError(f"must be one of {', '.join(IMAGES)}")
    return name


def one_cpu(instance_types: list[str]) -> list[str]:
    """``instance_types``, if all of one CPU (x86_64 or arm64): one launch
    template holds one image."""
    cpus = {ec2.InstanceType(name).architecture for name in instance_types}
    if len(cpus) > 1:
        raise ValueError("must be all x86_64 or all arm64 (one image serves them all)")
    return instance_types


def machine_image(name: str, instance_types: list[str]) -> ec2.IMachineImage:
    """The latest image ``name`` for the CPU of ``instance_types``."""
    arm = ec2.InstanceType(instance_types[0]).architecture == ec2.InstanceArchitecture.ARM_64
    if name == AL2023:
        cpu = ec2.AmazonLinuxCpuType.ARM_64 if arm else ec2.AmazonLinuxCpuType.X86_64
        return ec2.MachineImage.latest_amazon_linux2023(cpu_type=cpu)
    return ec2.MachineImage.from_ssm_parameter(
        DEBIAN_PARAMETER.format(arch="arm64" if arm else "amd64"),
        os=ec2.OperatingSystemType.LINUX,
    )
