"""The image instances boot and the setup script they run before the worker:
settings checked at synthesis, and what lands in the launch template."""

from pathlib import Path
from typing import Any

import pytest
from aws_cdk.assertions import Match, Template
from cdk.app import SettingError, build
from cdk.setup_script import END_MARK, MAX_SETUP_SCRIPT_BYTES, SETUP_SCRIPT_PATH

from tests.cdk.conftest import ACCOUNT, REGION, make_app

REPOSITORY = Path(__file__).parents[2]

#: EC2's limit on user data, in bytes before base64.
USER_DATA_LIMIT = 16 * 1024

#: Longer than any value CloudFormation puts in for a token of the user data
#: (a queue URL, a table name, the source object's URL are under 130 characters).
TOKEN_LENGTH = 200


def template_of(tmp_path: Path, **context: object) -> Template:
    return Template.from_stack(build(make_app(tmp_path, **context), account=ACCOUNT, region=REGION))


def image_parameters(template: Template) -> list[str]:
    return [
        parameter["Default"]
        for parameter in template.to_json().get("Parameters", {}).values()
        if parameter["Type"] == "AWS::SSM::Parameter::Value<AWS::EC2::Image::Id>"
    ]


def user_data(template: Template, token_length: int = TOKEN_LENGTH) -> str:
    """The launch template's user data, each token in it as long as ``token_length``."""
    (launch_template,) = template.find_resources("AWS::EC2::LaunchTemplate").values()
    joined: Any = launch_template["Properties"]["LaunchTemplateData"]["UserData"]["Fn::Base64"]
    parts = joined["Fn::Join"][1] if isinstance(joined, dict) else [joined]
    return "".join(part if isinstance(part, str) else "x" * token_length for part in parts)


def test_instances_boot_the_latest_debian_12_by_default(tmp_path: Path) -> None:
    template = template_of(tmp_path)
    assert image_parameters(template) == ["/aws/service/debian/release/bookworm/latest/amd64"]
    arm = template_of(tmp_path / "arm", **{"taskfleet:instanceTypes": "t4g.small,c7g.large"})
    assert image_parameters(arm) == ["/aws/service/debian/release/bookworm/latest/arm64"]


def test_amazon_linux_2023_is_an_option(tmp_path: Path) -> None:
    (parameter,) = image_parameters(template_of(tmp_path, **{"taskfleet:image": "al2023"}))
    assert parameter.startswith("/aws/service/ami-amazon-linux-latest/al2023-ami-")
    assert parameter.endswith("-x86_64")


def test_a_baked_image_wins_over_the_official_one(tmp_path: Path) -> None:
    template = template_of(tmp_path, **{"taskfleet:amiId": "ami-0123456789abcdef0"})
    assert image_parameters(template) == []
    template.has_resource_properties(
        "AWS::EC2::LaunchTemplate",
        {"LaunchTemplateData": Match.object_like({"ImageId": "ami-0123456789abcdef0"})},
    )


def test_the_setup_script_runs_from_the_user_data_before_bootstrap(tmp_path: Path) -> None:
    script = tmp_path / "setup.sh"
    script.write_text("apt-get install -y ffmpeg\necho 'it is $HOME'")  # no newline at the end
    text = user_data(template_of(tmp_path / "out", **{"taskfleet:setupScript": str(script)}))
    written = f"(umask 077; cat > {SETUP_SCRIPT_PATH}) <<'{END_MARK}'\n"
    assert f"{written}apt-get install -y ffmpeg\necho 'it is $HOME'\n{END_MARK}\n" in text
    # Written before bootstrap.sh's body, which runs it from there.
    assert text.index(written) < text.index("set -euo pipefail")
    bootstrap = (REPOSITORY / "image" / "bootstrap.sh").read_text()
    assert f"setup={SETUP_SCRIPT_PATH}\n" in bootstrap
    assert END_MARK not in user_data(template_of(tmp_path / "none"))


def test_the_largest_setup_script_keeps_the_user_data_within_ec2s_limit(tmp_path: Path) -> None:
    script = tmp_path / "setup.sh"
    script.write_text(("echo " + "x" * 94 + "\n") * (MAX_SETUP_SCRIPT_BYTES // 100))
    script.write_text(script.read_text() + "#" * (MAX_SETUP_SCRIPT_BYTES - script.stat().st_size))
    assert script.stat().st_size == MAX_SETUP_SCRIPT_BYTES
    text = user_data(template_of(tmp_path / "out", **{"taskfleet:setupScript": str(script)}))
    assert len(text.encode()) <= USER_DATA_LIMIT, len(text.encode())


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (
            b"x" * (MAX_SETUP_SCRIPT_BYTES + 1),
            f"is 8193 bytes, more than the {MAX_SETUP_SCRIPT_BYTES}",
        ),
        (b"echo \xff\n", "is not UTF-8 text"),
        (f"echo a\n{END_MARK}\necho b\n".encode(), f"has a line {END_MARK}"),
        (b" \n\n", "is empty"),
    ],
)
def test_a_script_that_cannot_travel_is_refused(
    tmp_path: Path, content: bytes, reason: str
) -> None:
    script = tmp_path / "setup.sh"
    script.write_bytes(content)
    with pytest.raises(SettingError, match=f"context taskfleet:setupScript=.*: {reason}"):
        template_of(tmp_path / "out", **{"taskfleet:setupScript": str(script)})


def test_a_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SettingError, match=r"taskfleet:setupScript=.*: is a directory"):
        template_of(tmp_path / "out", **{"taskfleet:setupScript": str(tmp_path)})
