"""A deterministic generator of brightrun-lora-v4 files: the repo's own demo data and benchmark input.

Usage:
  python -m converters demo --out data/demo/brightrun-demo.json            (36 conversations)
  python -m converters demo --out /tmp/f.json --conversations 242          (benchmark size)

The text is assembled from small phrase banks by a seeded random.Random, so the same arguments give
the same bytes on every machine. It carries the real files' mess on purpose (see
docs/brightrun-v4.md): null first turns, a blank target, edited conversations whose later
history differs from an earlier target, double-encoded UTF-8 (mojibake) on a few strings, typographic
punctuation (— ’ “ ”), and a UTF-8 byte-order mark. Turn counts run 3-10 (mean 6.5, like the real
file's 1,567 pairs over 242 conversations) and targets run ~60-200 words.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import ftfy.bad_codecs  # noqa: F401  (registers "sloppy-windows-1252", used to make mojibake)

CONSULTANT = "Elena Morales, CFP"
BUSINESS = "Pathways Financial Planning"
SYSTEM_PROMPT = (
    f"You are an emotionally intelligent financial planning chatbot representing {CONSULTANT}, of "
    f"{BUSINESS}. Elena believes that money is emotional before it is mathematical, that judgment has no "
    "place in a planning conversation, that small consistent steps beat heroic plans, and that clarity "
    "reduces fear. Speak warmly and plainly. Acknowledge the feeling before the numbers. Ask one question "
    "at a time. Avoid jargon unless you explain it, never shame spending, never promise returns, and never "
    "give tax or legal advice beyond general education: suggest a licensed professional where it matters. "
    "Keep responses under 300 words unless the client asks for detail."
)

PERSONAS = ["anxious_planner", "overwhelmed_avoider", "pragmatic_optimist"]
ARCS = [
    "panic_to_plan",
    "shame_to_acceptance",
    "confusion_to_clarity",
    "couple_conflict_to_alignment",
    "grief_to_grounding",
    "avoidance_to_action",
    "guilt_to_permission",
]
TOPICS = {
    "emergency_fund": "building an emergency fund",
    "debt_payoff_order": "which debt to pay off first",
    "roth_vs_traditional": "Roth versus traditional retirement accounts",
    "negotiating_compensation": "negotiating a raise",
    "caring_for_parents": "paying for a parent's care",
    "student_loans_forgiveness": "student loan forgiveness",
    "side_business_taxes": "taxes on a side business",
    "job_loss_bridge": "getting through a job loss",
    "retirement_catch_up": "catching up on retirement savings",
    "insurance_gaps": "gaps in insurance coverage",
    "stock_options_vesting": "stock options that are vesting",
    "budget_for_new_baby": "a budget for a new baby",
    "buying_first_home": "buying a first home",
    "college_savings": "saving for a child's college",
    "inheritance_windfall": "an unexpected inheritance",
    "divorce_finances": "untangling finances in a divorce",
    "credit_score_repair": "repairing a credit score",
    "medical_debt": "medical bills that piled up",
    "wedding_costs": "the cost of a wedding",
    "sabbatical_planning": "planning a sabbatical",
}
EMOTIONS = ["overwhelm", "fear", "shame", "confusion", "hope", "relief", "determination", "guilt", "anger"]
NAMES = [
    "Tomás",
    "Jennifer",
    "Chloé",
    "Marcus",
    "Priya",
    "Dana",
    "Ren",
    "Aisha",
    "Sam",
    "Noor",
    "Élodie",
    "Kwame",
    "Lucía",
    "Owen",
    "Mei",
    "Jordan",
]

OPENERS = [
    "I’m really stressed about {topic} and I don’t know where to start.",
    "Honestly, I’ve been avoiding {topic} for months—I feel embarrassed even asking.",
    "My partner and I keep arguing about {topic}, and I’m tired of it.",
    "Can you help me think through {topic}? I keep going in circles.",
    "Everyone says I should have figured out {topic} by now, and I haven’t.",
]
FOLLOW_UPS = [
    "Okay, that helps a little. But what if I make the wrong choice?",
    "We have about $4,000 in savings and roughly $11,500 on two credit cards.",
    "I think I’m scared that if I look at the numbers, they’ll be worse than I imagine.",
    "My manager said the pool is 3% this year, but I was hoping for more like 8%.",
    "That makes sense. How do I even start without feeling overwhelmed again?",
    "My partner thinks we should invest everything; I want a cushion first.",
    "I did what you suggested and wrote it down. It was less scary than I expected.",
    "Is it normal to feel this guilty about spending money on myself?",
    "What would you do first, if you were me?",
    "I don’t really understand the difference—can you explain it plainly?",
    "We talked last night and actually agreed on something for once.",
    "I’m worried I’ve already left it too late.",
]
VALIDATIONS = [
    "{name}, what you’re feeling makes complete sense.",
    "That’s a lot to carry, {name}, and you don’t have to sort it all out today.",
    "Thank you for telling me that, {name}—it takes courage to say it out loud.",
    "I hear how heavy this feels, {name}.",
    "{name}, it’s really common to feel exactly this way about {topic}.",
]
TEACHINGS = [
    "A simple rule of thumb is to cover the essentials first, then the high-interest debt, then the goals.",
    "Paying the highest interest rate first saves the most money; paying the smallest balance first "
    "builds momentum. Both work if you stick with them.",
    "A Roth contribution is taxed now and grows tax-free; a traditional one is deducted now and taxed "
    "later. Which is better depends on your bracket today versus in retirement.",
    "An emergency fund is simply money you promise not to invest, so that a surprise doesn’t become debt.",
    "When you negotiate, anchor on the value you bring and the market data, not on what you need to "
    "cover your bills.",
    "Couples often fight about money when they are really worried about safety, freedom, or fairness.",
    "For the tax details specifically, a CPA can confirm what applies to you; I can help with the big "
    "picture.",
    "It can help to write down the three things this money is really for, in your own words.",
    "Small, automatic transfers—even $25 a week—tend to beat big plans that depend on willpower.",
    "Looking at the numbers usually shrinks the fear, because a known problem is one we can plan for.",
]
REFLECTIONS = [
    "Let’s separate the story from the numbers for a minute, because both matter.",
    "The fact that you’re asking this question already tells me you care about doing it well.",
    "Nothing here is a verdict on you; it’s just information we can work with.",
    "You’ve already done the hardest part, which is looking at it.",
    "There’s no single “right” answer here, only the one that fits your values.",
]
QUESTIONS = [
    "Which of these options feels most like you?",
    "What would feel like a small, doable first step this week?",
    "How do you and your partner usually talk about money when it’s going well?",
    "What number would let you sleep a little better at night?",
    "What feels most urgent to you right now?",
]


def mojibake(text: str) -> str:
    """What happens upstream: UTF-8 bytes read back as Windows-1252."""
    return text.encode("utf-8").decode("sloppy-windows-1252")


def _target(rng: random.Random, name: str, topic: str) -> str:
    parts = [rng.choice(VALIDATIONS).format(name=name, topic=topic)]
    parts += rng.sample(TEACHINGS, rng.randint(1, 3))
    body = " ".join(parts)
    middle = " ".join(
        [*rng.sample(REFLECTIONS, rng.randint(1, 2)), *rng.sample(TEACHINGS, rng.randint(0, 2))]
    )
    return f"{body}\n\n{middle}\n\n{rng.choice(QUESTIONS)}"


def _conversation(rng: random.Random, index: int, n_turns: int, kind: str) -> dict:
    persona = PERSONAS[index % len(PERSONAS)]
    arc = ARCS[(index // len(PERSONAS)) % len(ARCS)]
    topic_key = list(TOPICS)[index % len(TOPICS)]
    topic = TOPICS[topic_key]
    name = rng.choice(NAMES)
    cid = f"demo-{index:04d}"
    users = [rng.choice(OPENERS).format(topic=topic)] + rng.sample(FOLLOW_UPS, n_turns - 1)
    answers = [_target(rng, name, topic) for _ in range(n_turns)]
    pairs, history = [], []
    for t in range(n_turns):
        target: str | None = answers[t]
        if t == 0 and kind == "null_first":
            target = None  # the turn trains nothing; its answer still shows up in the next history
        if t == n_turns - 1 and kind == "blank_last":
            target = "   \n"
        if t == 1 and kind == "mojibake":
            target = mojibake(answers[t])  # the next pair's history holds the clean text
        if kind == "edited" and t == n_turns - 1:
            # Edited after generation: this pair's history shows turn 1's answer revised.
            history = [dict(m) for m in history]
            history[1]["content"] += " (Edited for clarity.)"
        emotions = rng.sample(EMOTIONS, 2)
        pairs.append(
            {
                "id": f"{cid}-t{t + 1}",
                "turn_number": t + 1,
                "system_prompt": SYSTEM_PROMPT,
                "conversation_history": history,
                "current_user_input": mojibake(users[t]) if kind == "mojibake" and t == 0 else users[t],
                "emotional_context": {
                    "detected_emotions": {
                        "primary": emotions[0],
                        "primary_confidence": round(rng.uniform(0.55, 0.95), 2),
                        "secondary": emotions[1],
                        "intensity": round(rng.uniform(0.2, 0.9), 2),
                    }
                },
                "target_response": target,
                "training_metadata": {
                    "difficulty_level": f"intermediate_conversation_turn_{t + 1}",
                    "quality_score": rng.choice([2, 3, 3, 3, 4, 4, 5]),
                    "demonstrates_skills": rng.sample(
                        ["validation", "plain_language", "reframing", "one_question", "next_step"], 2
                    ),
                },
            }
        )
        history = [
            *history,
            {"role": "user", "content": users[t]},
            {"role": "assistant", "content": answers[t]},
        ]
    return {
        "conversation_metadata": {
            "conversation_id": cid,
            "total_turns": n_turns,
            "scaffolding": {
                "persona_key": persona,
                "emotional_arc_key": arc,
                "training_topic_key": topic_key,
            },
        },
        "training_pairs": pairs,
    }


def _kind(i: int) -> str:
    # A fixed pattern, so every file of a dozen conversations or more has each kind of mess.
    return {1: "mojibake", 3: "null_first", 5: "edited", 8: "null_first", 10: "blank_last"}.get(
        i % 12, "clean"
    )


def generate(n_conversations: int = 36, seed: int = 7, max_turns: int = 10) -> dict:
    rng = random.Random(seed)
    conversations = [
        _conversation(rng, i, rng.randint(3, max(3, max_turns)), _kind(i)) for i in range(n_conversations)
    ]
    return {
        "training_file_metadata": {
            "file_name": f"BrightRun demo - {n_conversations} conversations",
            "version": "4.0.0",
            "format_spec": "brightrun-lora-v4",
            "target_model": "demo-generator",
            "vertical": "financial_planning_consultant",
            "total_conversations": n_conversations,
            "total_training_pairs": sum(len(c["training_pairs"]) for c in conversations),
        },
        "consultant_profile": {
            "name": CONSULTANT,
            "business": BUSINESS,
            "core_philosophy": {
                "principle_1": "Money is emotional before it is mathematical",
                "principle_2": "Judgment-free space",
                "principle_3": "Small consistent steps",
            },
            "communication_style": {
                "tone": "warm, plain, steady",
                "techniques": ["acknowledge feelings first", "one question at a time"],
            },
        },
        "conversations": conversations,
    }


def write(path: Path | str, n_conversations: int = 36, seed: int = 7, max_turns: int = 10) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(generate(n_conversations, seed, max_turns), indent=2, ensure_ascii=False)
    # Real exports sometimes start with a byte-order mark; the demo does too.
    path.write_text("\ufeff" + text + "\n", encoding="utf-8")
