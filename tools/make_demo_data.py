"""Generate the small demo instruction-tuning dataset for medtune.

All samples are SYNTHETIC: they were produced from hand-written templates for
this project and contain no real patient records and no text copied from any
corpus. The formats mirror those of Rohanian et al. (2024), "Exploring the
Effectiveness of Instruction Tuning in Biomedical Language Processing":
untyped BIO NER, three-way NLI, and PubMedQA-style yes/no/maybe QA.

Usage: python tools/make_demo_data.py  (writes recipes/data/demo.jsonl;
seeded with random.Random(0), so reruns are byte-identical).
"""
import json
from pathlib import Path
import random

OUT = Path(__file__).resolve().parents[1] / "recipes/data/demo.jsonl"
N_NER, N_NLI, N_QA = 150, 90, 120

NER_INSTR = [
    "Your task is to identify biomedical entities in the given text. Tag each token with B for the beginning of an entity, I for inside an entity, or O for outside.",
    "Find all disease and chemical mentions in the sentence below. For every token, output the token followed by its tag: B (first token of an entity), I (later token of an entity) or O (not part of an entity).",
    "Perform named entity recognition on this biomedical sentence. Label each token as B, I or O, where B marks the start of a disease or chemical name, I marks its continuation and O marks all other tokens.",
    "Annotate the following text with BIO tags for biomedical entities such as diseases and drugs. Write one line per token in the form 'token : TAG'.",
]
NLI_INSTR = [
    "Determine the relationship between the two clinical sentences below. Answer Entailment if the second sentence follows from the first, Contradiction if it conflicts with it, or Neutral otherwise.",
    "You are given a premise and a hypothesis taken from a clinical note. Decide whether the premise entails the hypothesis, contradicts it, or is neutral towards it. Reply with Entailment, Contradiction or Neutral.",
    "Read Sentence 1 and Sentence 2 carefully. Does Sentence 1 imply Sentence 2 (Entailment), rule it out (Contradiction), or neither (Neutral)? Give only the label as your answer.",
    "Classify the logical relation between the following pair of medical statements as Entailment, Contradiction or Neutral, using only the information in the first statement.",
]
QA_INSTR = [
    "Answer the biomedical research question based on the context. Reply with yes, no or maybe.",
    "Read the abstract excerpt below and answer the question with a single word: yes, no or maybe.",
    "Using only the information in the given context, decide whether the answer to the research question is yes, no or maybe.",
    "Given the context from a study abstract, answer the yes/no question. If the evidence is inconclusive, answer maybe.",
]

DISEASES = ["breast cancer", "type 2 diabetes", "Duchenne muscular dystrophy", "hypertension",
            "asthma", "non-small cell lung cancer", "Parkinson disease", "chronic kidney disease",
            "hepatitis C", "migraine", "atrial fibrillation", "sepsis", "psoriasis", "tuberculosis",
            "heart failure", "ovarian cancer", "epilepsy", "acute pancreatitis"]
ABBREV = [("cystic fibrosis", "CF"), ("chronic obstructive pulmonary disease", "COPD"),
          ("acute myeloid leukemia", "AML"), ("rheumatoid arthritis", "RA"),
          ("multiple sclerosis", "MS"), ("acute kidney injury", "AKI")]
CHEMICALS = ["cisplatin", "acetylsalicylic acid", "metformin", "tobramycin", "doxorubicin",
             "valproic acid", "warfarin", "insulin glargine", "tamoxifen", "prednisone",
             "lithium carbonate", "methotrexate", "sodium bicarbonate", "levodopa",
             "vitamin D", "amoxicillin", "nitric oxide", "atorvastatin"]

# {D}/{E} disease, {C}/{K} chemical, {A} disease with its abbreviation "( X )".
NER_TEMPLATES = [
    "Patients with {A} were treated with {C} .",
    "{C} is widely used in the management of {D} .",
    "We report a case of {D} induced by long-term exposure to {C} .",
    "The combination of {C} and {K} improved survival in patients with {D} .",
    "Treatment with {C} was associated with a lower incidence of {D} in this cohort .",
    "A 45-year-old woman with a history of {D} presented with worsening symptoms after starting {C} .",
    "The prevalence of {D} was higher among patients with {E} than among healthy controls .",
    "{C} did not significantly alter the progression of {A} over two years of follow-up .",
    "In mice , administration of {C} reduced markers of {D} .",
    "Serum levels of {C} were measured in 120 children with {D} .",
    "No cases of {D} were observed in the group receiving {C} .",
    "These findings suggest that {C} may be a promising therapy for {A} .",
    "Genetic variants associated with {D} were identified in a study of 3000 participants .",
    "Adverse events included nausea , headache and {D} , but discontinuation of {C} was rarely required .",
    "The risk of {D} increased when {C} was given together with {K} .",
]


def cap(text):
    return text[0].upper() + text[1:]  # str.capitalize() would turn "vitamin D" into "Vitamin d"


def tag(phrase):
    return [(t, "B" if i == 0 else "I") for i, t in enumerate(phrase.split())]


def make_ner(rng):
    while True:
        tmpl = rng.choice(NER_TEMPLATES)
        d, e = rng.sample(DISEASES, 2)
        c, k = rng.sample(CHEMICALS, 2)
        full, ab = rng.choice(ABBREV)
        slots = {"{D}": tag(d), "{E}": tag(e), "{C}": tag(c), "{K}": tag(k),
                 "{A}": tag(full) + [("(", "O"), (ab, "B"), (")", "O")]}
        pairs = []
        for word in tmpl.split():
            pairs.extend(slots.get(word, [(word, "O")]))
        if 8 <= len(pairs) <= 30:
            break
    assert all(" " not in t and t for t, _ in pairs)
    return {"instruction": rng.choice(NER_INSTR),
            "input": " ".join(t for t, _ in pairs),
            "output": "\n".join(f"{t} : {g}" for t, g in pairs),
            "source": "demo-ner", "task": "ner"}


def subject(rng):
    with_age = rng.random() >= 0.4
    return f"A {rng.randint(19, 88)}-year-old {rng.choice(['man', 'woman'])}" if with_age else "The patient"


# (premise after the subject, entailed, contradicted, neutral); hypotheses follow "The patient".
NLI_ROWS = [
    (lambda r: f"has a fever of {r.randint(385, 405) / 10} C.",
     " is febrile.", " is afebrile.", " has a urinary tract infection."),
    (lambda r: f"has a blood pressure of {r.randint(165, 210)}/{r.randint(95, 120)} mmHg.",
     "'s blood pressure is elevated.", "'s blood pressure is within normal limits.", " smokes."),
    (lambda r: f"has a fasting blood glucose of {r.randint(250, 420)} mg/dL.",
     " is hyperglycemic.", "'s blood glucose is normal.", " has diabetic retinopathy."),
    (lambda r: f"has a resting heart rate of {r.randint(121, 150)} beats per minute.",
     " is tachycardic.", " is bradycardic.", " is anemic."),
    (lambda r: "denies any chest pain or shortness of breath.",
     " does not report chest pain.", " complains of chest pain.", " has coronary artery disease."),
    (lambda r: "has a chest X-ray showing a right lower lobe consolidation.",
     "'s chest X-ray is abnormal.", "'s chest X-ray is normal.", " was recently hospitalized."),
    (lambda r: f"has an oxygen saturation of {r.randint(80, 87)}% on room air.",
     " is hypoxemic.", "'s oxygen saturation is normal.", " has pneumonia."),
    (lambda r: f"has a hemoglobin level of {r.randint(55, 85) / 10} g/dL.",
     " is anemic.", "'s hemoglobin level is normal.", " has a gastrointestinal bleed."),
    (lambda r: "has no known drug allergies.", " is not known to be allergic to any medication.",
     " is allergic to penicillin.", " takes aspirin daily."),
    (lambda r: f"has a serum sodium of {r.randint(118, 128)} mmol/L.",
     " has hyponatremia.", "'s sodium level is normal.", " has heart failure."),
    (lambda r: f"was started on {r.choice(CHEMICALS)} two days ago.",
     " is receiving a new medication.", " is not taking any medication.", " has kidney disease."),
    (lambda r: "had an MRI of the brain that was unremarkable.", "'s brain MRI showed no abnormalities.",
     "'s brain MRI revealed a large mass.", " has chronic headaches."),
]


def make_nli(rng, label):
    premise, ent, con, neu = rng.choice(NLI_ROWS)
    hyp = "The patient" + {"Entailment": ent, "Contradiction": con, "Neutral": neu}[label]
    prem = f"{subject(rng)} {premise(rng)}"
    return {"instruction": rng.choice(NLI_INSTR),
            "input": f"Sentence 1: {prem}\nSentence 2: {hyp}", "output": label,
            "source": "demo-nli", "task": "nli"}


OUTCOMES = ["hospital readmission", "all-cause mortality", "disease progression",
            "postoperative infection", "major bleeding", "cardiovascular events"]
EXPOSURES = ["smoking", "shift work", "obesity", "low vitamin D levels", "air pollution",
             "high sugar intake"]
TESTS = ["a point-of-care ultrasound", "a serum biomarker panel", "low-dose computed tomography",
         "a machine learning risk score", "a rapid antigen test"]


def qa_trial(r, ans):
    d, c, o = r.choice(DISEASES), r.choice(CHEMICALS), r.choice(OUTCOMES)
    a = r.randint(18, 35)
    ctx = [f"{cap(o)} remains a major concern in patients with {d}.",
           f"We randomly assigned {r.randint(120, 900)} patients with {d} to {c} or placebo."]
    ctx.append({"yes": f"{cap(c)} significantly reduced {o} compared with placebo ({a - r.randint(7, 12)}% vs {a}%, p = 0.0{r.randint(1, 4)}).",
                "no": f"The rate of {o} did not differ between the {c} and placebo groups ({a}% vs {a + r.randint(-1, 1)}%, p = 0.{r.randint(45, 91)}).",
                "maybe": f"{cap(o)} was numerically lower with {c} ({a - 3}% vs {a}%, p = 0.0{r.randint(6, 9)}), but the trial was underpowered and the result was not conclusive."}[ans])
    return ctx, f"Does {c} reduce {o} in patients with {d}?"


def qa_cohort(r, ans):
    d, x = r.choice(DISEASES), r.choice(EXPOSURES)
    ctx = [f"We followed {r.randint(2, 40) * 1000} adults in a prospective cohort for {r.randint(5, 20)} years.",
           f"Data on {x} were collected at baseline and incident {d} was recorded."]
    hr = r.randint(14, 25) / 10
    ctx.append({"yes": f"{cap(x)} was associated with an increased risk of {d} (hazard ratio {hr}, 95% CI {hr - 0.3:.1f} to {hr + 0.4:.1f}).",
                "no": f"{cap(x)} was not associated with {d} (hazard ratio 1.0{r.randint(0, 4)}, 95% CI 0.8{r.randint(1, 9)} to 1.2{r.randint(1, 9)}).",
                "maybe": f"The association between {x} and {d} was significant in women but not in men, and residual confounding could not be excluded."}[ans])
    return ctx, f"Is {x} associated with an increased risk of {d}?"


def qa_diagnostic(r, ans):
    d, t = r.choice(DISEASES), r.choice(TESTS)
    ctx = [f"Early diagnosis of {d} is often difficult in routine practice.",
           f"A total of {r.randint(80, 600)} patients with suspected {d} underwent {t} and a reference standard evaluation."]
    ctx.append({"yes": f"The test achieved a sensitivity of {r.randint(92, 98)}% and a specificity of {r.randint(90, 97)}%.",
                "no": f"The test achieved a sensitivity of only {r.randint(45, 60)}% and a specificity of {r.randint(50, 65)}%.",
                "maybe": f"Sensitivity was high ({r.randint(90, 96)}%), but specificity was low ({r.randint(40, 55)}%) and varied widely between centres."}[ans])
    return ctx, f"Is {t} accurate for diagnosing {d}?"


def make_qa(rng, ans):
    ctx, q = rng.choice([qa_trial, qa_cohort, qa_diagnostic])(rng, ans)
    return {"instruction": rng.choice(QA_INSTR),
            "input": f"Context: {' '.join(ctx)}\nQuestion: {q}", "output": ans,
            "source": "demo-qa", "task": "qa"}


def draw(rng, make, n, seen, *args):
    """Call make(rng, *args) until n samples not already in `seen` are collected."""
    out = []
    while len(out) < n:
        sample = make(rng, *args)
        if (key := json.dumps(sample)) not in seen:
            seen.add(key)
            out.append(sample)
    return out


def main():
    rng = random.Random(0)
    seen = set()  # membership only, never iterated, so output order stays deterministic
    samples = draw(rng, make_ner, N_NER, seen)
    for label in ["Entailment", "Contradiction", "Neutral"]:
        samples += draw(rng, make_nli, N_NLI // 3, seen, label)
    for ans, n in {"yes": 54, "no": 42, "maybe": N_QA - 54 - 42}.items():
        samples += draw(rng, make_qa, n, seen, ans)
    rng.shuffle(samples)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    lines = "".join(json.dumps(s, ensure_ascii=False) + "\n" for s in samples)
    OUT.write_text(lines, encoding="utf-8", newline="\n")
    print(f"wrote {len(samples)} samples to {OUT}")


if __name__ == "__main__":
    main()
