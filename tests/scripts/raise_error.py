from distributed import get_client


def divide(x):
    return 1 / x


def main():
    raise ValueError(f"boom from the script, after {get_client().submit(divide, 4).result()}")


main()
